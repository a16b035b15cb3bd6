"""`python -m pgops.daemon`: the daemon alone, as the systemd unit starts it.

`pgops daemon` goes through the command line, which imports every command (the advisor's SQL parser, the demo,
...) before the daemon starts: about 100 MB resident. This entry point imports only what the daemon needs, and
each job's module when that job first runs, so an idle daemon stays well under that. Same options and behaviour
as `pgops daemon` without `--once`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pgops.config import load_settings
from pgops.daemon.main import run_daemon
from pgops.errors import PgopsError
from pgops.logs import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgops.daemon", description="Run pgops' jobs until SIGTERM.")
    parser.add_argument("--config", "-c", type=Path, help="pgops.toml (default: PGOPS_CONFIG, ./pgops.toml)")
    parser.add_argument("--dsn", help="database URL (default: PGOPS_DATABASE_URL, DATABASE_URL, [database] url)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="/metrics and /healthz (default: [daemon] listen)")
    parser.add_argument("--debug", action="store_true", help="verbose logs")
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    try:
        settings = load_settings(args.config, dsn=args.dsn)
        return run_daemon(settings, args.listen or settings.daemon.listen)
    except PgopsError as exc:
        print(f"pgops: error: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
