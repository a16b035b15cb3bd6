"""`pgops sandbox`: a throwaway local PostgreSQL with pg_stat_statements, pg_cron and hypopg."""

from __future__ import annotations

from pathlib import Path

import typer

from pgops import output
from pgops.cli.app import app
from pgops.sandbox import DEFAULT_DIR, PG_BIN_ENV, Sandbox

sandbox_app = typer.Typer(
    help="A throwaway local PostgreSQL (loopback only, trust auth) for the demo and tests.",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")

DirOption = typer.Option(DEFAULT_DIR, "--dir", help="Folder holding the cluster, its log and its state.")
PgBinOption = typer.Option(
    None,
    "--pg-bin",
    help=f"Folder of the server binaries (initdb, pg_ctl, postgres) to run; default: {PG_BIN_ENV}, else the newest "
    "installed.",
)


def _warn_missing(box: Sandbox) -> None:
    for extension, package in box.status().missing_extensions.items():
        output.err_console.print(
            f"pgops: warning: extension {extension} is not installed (package {package})", highlight=False
        )


@sandbox_app.command()
def start(
    directory: Path = DirOption,
    pg_bin: Path | None = PgBinOption,
    replicas: int = typer.Option(
        0, "--replicas", min=0, max=16, help="Streaming replicas to run too (pg_basebackup -R), each on its own port."
    ),
) -> None:
    """Create the cluster if needed, start it on a free port, and print its URL (harmless if running).

    Replicas made before start again too; the command returns once every standby streams."""
    box = Sandbox(directory, pg_bin)
    url = box.start(replicas=replicas)
    _warn_missing(box)
    typer.echo(url)


@sandbox_app.command()
def stop(
    directory: Path = DirOption,
    remove: bool = typer.Option(False, "--remove", help="Also delete the cluster's folder."),
) -> None:
    """Stop the replicas and the server, and wait until no process is left."""
    was_running = Sandbox(directory).stop(remove=remove)
    output.err_console.print("stopped" if was_running else "not running", highlight=False)


@sandbox_app.command()
def status(
    directory: Path = DirOption,
    fmt: output.Format = typer.Option(output.Format.table, "--format", help="table or json."),
) -> None:
    """Whether the sandbox exists and runs, its URL, pid and missing extensions; exit 1 when stopped."""
    info = Sandbox(directory).status()
    if fmt is output.Format.json:
        output.print_json(info)
    else:
        rows = [
            ("directory", info.directory),
            ("state", "running" if info.running else "stopped" if info.created else "not created"),
            ("url", info.url),
            ("pid", info.pid),
            ("PostgreSQL", info.major),
            *[(f"missing {name}", f"install {pkg}") for name, pkg in info.missing_extensions.items()],
            *[(f"replica {r.number}", f"{r.state}  {r.url}" + (f"  pid {r.pid}" * bool(r.pid))) for r in info.replicas],
        ]
        output.console.print(output.table("pgops sandbox", ["", ""], rows, keep=("",), show_header=False))
    if not info.running:
        raise typer.Exit(1)


@sandbox_app.command()
def url(
    directory: Path = DirOption,
    replica: int | None = typer.Option(None, "--replica", min=1, help="A replica's URL instead of the primary's."),
) -> None:
    """Print the sandbox's database URL (for PGOPS_DATABASE_URL or psql)."""
    typer.echo(Sandbox(directory).url(replica=replica))


@sandbox_app.command()
def promote(
    directory: Path = DirOption,
    replica: int = typer.Option(1, "--replica", min=1, help="The replica to promote."),
) -> None:
    """Promote a replica to a primary (for failover tests) and print its URL; it stops following the old one."""
    typer.echo(Sandbox(directory).promote(replica))
