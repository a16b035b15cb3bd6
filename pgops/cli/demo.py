"""`pgops demo`: pgops' main jobs, end to end, on a throwaway PostgreSQL with the demo application."""

from __future__ import annotations

from pathlib import Path

import psycopg
import typer
from psycopg import sql
from rich.rule import Rule

from pgops import demo as demo_app
from pgops import output
from pgops.cli.app import app
from pgops.errors import PgopsError
from pgops.sandbox import DEFAULT_DIR, Sandbox

DATABASE = "pgops_demo"


def _step(title: str, argv: list[str] | None = None) -> None:
    output.console.print(Rule(title, align="left"))
    if argv:
        output.console.print(f"$ pgops {' '.join(argv)}", style="bold", highlight=False)


def _pgops(dsn: str, *argv: str) -> int:
    """Run one pgops command in this process, exactly as a user would type it."""
    from pgops.cli import run

    _step(f"pgops {argv[0]}", list(argv))
    code = run(["--dsn", dsn, *argv])
    if code not in (0, 1, 2):  # report commands use 1 and 2 for warning and critical
        raise PgopsError(f"demo step `pgops {' '.join(argv)}` failed with exit code {code}")
    return code


@app.command()
def demo(
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", help="Sandbox folder (created if needed)."),
    scale: float = typer.Option(1.0, "--scale", min=0.001, help="Data volume; 1.0 is about 1.1 M rows."),
    statements: int = typer.Option(1500, "--statements", min=1, help="Statements in the demo workload."),
) -> None:
    """Start a sandbox, load the demo app, run its workload, and show each pgops job on it."""
    _step("sandbox", ["sandbox", "start", "--dir", str(directory)])
    server = Sandbox(directory).start()
    dsn = Sandbox(directory).url(DATABASE)
    output.console.print(server, highlight=False)

    _step(f"demo application in database {DATABASE} (scale {scale:g})")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
        demo_app.load_schema(conn)
        demo_app.generate(conn, scale)
        conn.execute("SELECT pg_stat_statements_reset()")

    _pgops(dsn, "migrate")

    _step(f"demo workload: {statements} statements over 4 connections")
    result = demo_app.run_workload(dsn, statements)
    output.console.print(
        f"{result.reads} reads, {result.writes} writes in {result.seconds:.1f}s "
        f"({result.statements / result.seconds:.0f} statements/s)",
        highlight=False,
    )
    _pgops(dsn, "pool-report")
    _pgops(dsn, "advise-indexes", "--format", "table")
    output.console.print(Rule())
    output.console.print(f"The demo database stays up: pgops --dsn {dsn} ...", highlight=False)
    output.console.print(f"Stop it with: pgops sandbox stop --dir {directory}", highlight=False)
