"""`pgops demo`: pgops' main jobs, end to end, on a throwaway PostgreSQL with the demo application.

Each step runs the very command a user would type (printed before it), in this process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import typer
from rich.rule import Rule
from rich.syntax import Syntax

from pgops import demo as demo_app
from pgops import output
from pgops.cli.app import app
from pgops.errors import PgopsError
from pgops.sandbox import DEFAULT_DIR, PG_BIN_ENV, Sandbox, recreate_database

DATABASE = "pgops_demo"
VIEW = "public.fund_stats"
DEBOUNCE = "2s"
LEAK_THRESHOLD = 2  # seconds idle in transaction before the pool report calls it a leak


def _title(text: str) -> None:
    output.console.print(Rule(text, align="left"))


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _pgops(dsn: str, *argv: str, env: dict[str, str] | None = None, stdout: Path | None = None) -> int:
    """Run one pgops command in this process, exactly as a user would type it."""
    from pgops.cli import run

    env = env or {}
    shown = " ".join([*(f"{k}={v}" for k, v in env.items()), "pgops", *argv, *([f"> {stdout}"] if stdout else [])])
    output.console.print(f"$ {shown}", style="bold", highlight=False)
    with _environment(env), contextlib.ExitStack() as stack:
        if stdout:
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(stdout.open("w"))))
        code = run(["--dsn", dsn, *argv])
    if code not in (0, 1, 2):  # report commands use 1 and 2 for warning and critical
        raise PgopsError(f"demo step `pgops {' '.join(argv)}` failed with exit code {code}")
    return code


def _workload(dsn: str, statements: int) -> float:
    result = demo_app.run_workload(dsn, statements, seed=42)
    output.console.print(
        f"{result.reads} reads, {result.writes} writes in {result.seconds:.1f}s "
        f"({result.statements / result.seconds:.0f} statements/s)",
        highlight=False,
    )
    return result.seconds


def _leak_a_transaction(dsn: str) -> psycopg.Connection:
    """What a buggy request handler does: open a transaction, touch a row, and never finish."""
    conn = psycopg.connect(dsn, application_name=demo_app.APPLICATION_NAME)
    conn.execute("UPDATE sessions SET last_seen_at = now() WHERE id = (SELECT id FROM sessions LIMIT 1)")
    return conn


@app.command()
def demo(
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", help="Sandbox folder (created if needed)."),
    scale: float = typer.Option(1.0, "--scale", min=0.001, max=1000, help="Data volume; 1.0 is about 1.1 M rows."),
    statements: int = typer.Option(
        1500, "--statements", min=1, max=10_000_000, help="Statements in each run of the workload."
    ),
    pg_bin: Path | None = typer.Option(
        None, "--pg-bin", help=f"Server binaries for the sandbox; default: {PG_BIN_ENV}, else the newest installed."
    ),
) -> None:
    """Start a sandbox, load the demo app, run its workload, and show each pgops job on it."""
    _title("a throwaway PostgreSQL")
    output.console.print(f"$ pgops sandbox start --dir {directory}", style="bold", highlight=False)
    box = Sandbox(directory, pg_bin)
    output.console.print(box.start(), highlight=False)
    dsn = box.url(DATABASE)

    _title(f"the demo application in database {DATABASE} (scale {scale:g})")
    missing = box.status().missing_extensions  # hypopg may be missing: the advice then comes from pg_stats
    recreate_database(box.url(), DATABASE, [e for e in ("pg_stat_statements", "hypopg") if e not in missing])
    with psycopg.connect(dsn, autocommit=True) as conn:
        demo_app.load_schema(conn)
        demo_app.generate(conn, scale)
        conn.execute("SELECT pg_stat_statements_reset()")

    _title("migrations: pgops' own objects in the pgops schema")
    _pgops(dsn, "migrate")

    _title("debounced refresh: watch the dashboard's materialized view")
    _pgops(dsn, "refresh", "watch", VIEW, "--debounce", DEBOUNCE, "--max-wait", "1m")

    _title(f"the application at work: {statements} statements over 4 connections, one of them leaking")
    leaked, leaked_at = _leak_a_transaction(dsn), time.monotonic()
    try:
        before = _workload(dsn, statements)

        _title("pool report: where the connections go, and who leaks")
        time.sleep(max(0.0, leaked_at + LEAK_THRESHOLD + 0.5 - time.monotonic()))
        _pgops(dsn, "pool-report", env={"PGOPS_POOL_REPORT_IDLE_IN_TRANSACTION": f"{LEAK_THRESHOLD}s"})

        _title(f"refresh: the view went stale with the writes; after {DEBOUNCE} of quiet it is due")
        _pgops(dsn, "refresh", "status")
        time.sleep(2.5)
        _pgops(dsn, "refresh", "now", VIEW)
        _pgops(dsn, "refresh", "status")

        _title("cleanup: expired keys, sessions and old logs, in short batches that skip locked rows")
        _pgops(dsn, "cleanup", "run")
    finally:
        leaked.close()

    _title(
        "index advice from pg_stat_statements, "
        + ("estimated from pg_stats" if "hypopg" in missing else "validated with hypopg")
    )
    script = directory / "fix.sql"
    _pgops(dsn, "advise-indexes", stdout=script)
    output.console.print(Syntax(script.read_text(), "sql", word_wrap=True))
    output.console.print(f"$ psql -v ON_ERROR_STOP=1 -f {script}", style="bold", highlight=False)
    psql = subprocess.run(
        [str(box.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(script)],
        capture_output=True,
        text=True,
    )
    if psql.returncode != 0:
        raise PgopsError(f"psql could not run {script}: {psql.stderr.strip()}")

    _title("the same workload with the advised indexes")
    after = _workload(dsn, statements)
    output.console.print(f"workload: {before:.1f}s before fix.sql, {after:.1f}s after ({before / after:.1f}x)")

    output.console.print(Rule())
    output.console.print(f"The demo database stays up: pgops --dsn {dsn} status", highlight=False)
    output.console.print(f"Stop it with: pgops sandbox stop --dir {directory}", highlight=False)
