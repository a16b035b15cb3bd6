"""`pgops daemon` (the scheduler of every job, for systemd) and `pgops systemd-unit` (its unit for this machine)."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import typer

from pgops import output
from pgops.cli.app import app, state
from pgops.daemon.http import parse_listen
from pgops.daemon.main import run_daemon, run_once
from pgops.daemon.scheduler import Outcome
from pgops.daemon.systemd import UnitOptions, render_unit
from pgops.errors import EXIT_ERROR, EXIT_OK


@app.command()
def daemon(
    ctx: typer.Context,
    listen: str | None = typer.Option(
        None,
        "--listen",
        metavar="HOST:PORT",
        help="Where the pages, /metrics and /healthz answer (default: \\[daemon] listen, 127.0.0.1:9188); "
        "beyond loopback the pages need PGOPS_WEB_TOKEN.",
    ),
    once: bool = typer.Option(False, "--once", help="Run every job once (under the same locks) and exit."),
    fmt: output.Format = typer.Option(output.Format.table, "--format", help="With --once: table or json."),
) -> None:
    """Run the scheduled jobs until SIGTERM; with --once, run each once and exit non-zero if one failed."""
    settings = state(ctx).settings
    if not once:
        raise typer.Exit(run_daemon(settings, listen or settings.daemon.listen))
    results = run_once(settings)
    if fmt is output.Format.json:
        output.print_json(results)
    else:
        rows = [(r.job, r.outcome.value, output.human_duration(r.seconds), r.detail) for r in results]
        columns = ["job", "outcome", "took", "detail"]
        output.console.print(output.table("pgops daemon --once", columns, rows, keep=("job", "outcome", "took")))
    failed = any(r.outcome is Outcome.failed for r in results)
    raise typer.Exit(EXIT_ERROR if failed else EXIT_OK)


@app.command("systemd-unit")
def systemd_unit(
    user: str | None = typer.Option(None, "--user", help="Run as this existing user (default: a DynamicUser)."),
    config: Path = typer.Option(Path("/etc/pgops/pgops.toml"), "--config-path", help="pgops.toml the unit reads."),
    env_file: Path = typer.Option(
        Path("/etc/pgops/pgops.env"), "--env-file", help="EnvironmentFile with PGOPS_DATABASE_URL (keep it 0600)."
    ),
    listen: str = typer.Option(
        "127.0.0.1:9188", "--listen", metavar="HOST:PORT", help="For the pages, /metrics and /healthz."
    ),
    python: Path | None = typer.Option(
        None, "--python", help="Python of the pgops installation (default: the one running this command)."
    ),
    watchdog: int = typer.Option(
        30, "--watchdog-sec", min=2, max=86400, help="WatchdogSec: restart if not fed this long."
    ),
) -> None:
    """Print a systemd unit for this installation (save as /etc/systemd/system/pgops.service)."""
    parse_listen(listen)
    options = UnitOptions(
        # not resolved: a venv's python is a symlink to the base interpreter, which does not have pgops
        python=str((python or Path(sys.executable)).absolute()),
        config=str(config.absolute()),
        environment_file=str(env_file.absolute()),
        listen=listen,
        user=user,
        watchdog=timedelta(seconds=watchdog),
    )
    typer.echo(render_unit(options), nl=False)
