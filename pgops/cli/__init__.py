"""Command line: a thin layer that parses options, calls library functions and renders their results."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pgops.cli import advisor as _advisor  # noqa: F401
from pgops.cli import cleanup as _cleanup  # noqa: F401
from pgops.cli import daemon as _daemon  # noqa: F401
from pgops.cli import demo as _demo  # noqa: F401  (registers commands)
from pgops.cli import migrate as _migrate  # noqa: F401
from pgops.cli import pool_report as _pool_report  # noqa: F401
from pgops.cli import refresh as _refresh  # noqa: F401
from pgops.cli import sandbox as _sandbox  # noqa: F401
from pgops.cli import status as _status  # noqa: F401
from pgops.cli import workload as _workload  # noqa: F401
from pgops.cli.app import app
from pgops.errors import EXIT_ERROR, PgopsError, first_line, redact
from pgops.output import err_console


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code; a `PgopsError` becomes one line on stderr."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=list(argv) if argv is not None else None, prog_name="pgops")
    except SystemExit as exc:  # typer ends every command, and every usage error, this way
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_ERROR)
    except PgopsError as exc:
        err_console.print(f"pgops: error: {redact(exc.message)}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("pgops: interrupted")
        return 130
    except Exception as exc:
        if debug:
            raise
        err_console.print(
            f"pgops: internal error: {type(exc).__name__}: {first_line(exc)} (run with --debug for a traceback)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 70
    return 0


def main() -> None:
    sys.exit(run())
