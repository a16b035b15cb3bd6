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
URL_VARIABLES = ("PGOPS_DATABASE_URL", "DATABASE_URL")
SLOT = "old_replica"  # the replica part's forgotten replication slot


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


def _pgops(
    dsn: str, *argv: str, env: dict[str, str] | None = None, stdout: Path | None = None, config: Path | None = None
) -> int:
    """Run one pgops command in this process, exactly as a user would type it: on `dsn`, or on the targets of
    `config`."""
    from pgops.cli import run

    env = env or {}
    where = ["--config", str(config)] if config else []
    shown = " ".join(
        [*(f"{k}={v}" for k, v in env.items()), "pgops", *where, *argv, *([f"> {stdout}"] if stdout else [])]
    )
    output.console.print(f"$ {shown}", style="bold", highlight=False)
    with _environment(env), _without_url(config is not None), contextlib.ExitStack() as stack:
        if stdout:
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(stdout.open("w"))))
        code = run([*(where or ["--dsn", dsn]), *argv])
    if code not in (0, 1, 2):  # report commands use 1 and 2 for warning and critical
        raise PgopsError(f"demo step `pgops {' '.join(argv)}` failed with exit code {code}")
    return code


@contextlib.contextmanager
def _without_url(active: bool) -> Iterator[None]:
    """A URL in the environment would be the only target: the demo's config names the sandbox's servers."""
    saved = {name: os.environ.pop(name) for name in URL_VARIABLES if active and name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


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


def _targets_config(box: Sandbox, directory: Path) -> Path:
    """A pgops.toml naming the demo database on the primary and on replica 1 as targets."""
    config = directory / "pgops.toml"
    config.write_text(
        "# the demo database on the sandbox's primary and on its streaming replica; each role is read from the\n"
        "# server, never configured\n"
        f'[targets.primary]\nurl = "{box.url(DATABASE)}"\n\n'
        f'[targets.replica-1]\nurl = "{box.url(DATABASE, replica=1)}"\n'
    )
    output.console.print(f"$ cat {config}", style="bold", highlight=False)
    output.console.print(Syntax(config.read_text(), "toml"))
    return config


def _replica_part(box: Sandbox, dsn: str, config: Path, statements: int) -> None:
    """Reads on the replica, a long report there holding the primary's xmin back (hot_standby_feedback), and a
    forgotten replication slot: what `status --all` and the merged advice show of them."""
    replica = box.url(DATABASE, replica=1)
    _title("the replica: support-desk searches run there only, and a nightly report holds a snapshot")
    with psycopg.connect(box.url(replica=1), autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET hot_standby_feedback = on")  # the replica's snapshots hold the primary back
        admin.execute("ALTER SYSTEM SET wal_receiver_status_interval = '1s'")
        admin.execute("SELECT pg_reload_conf()")
    searches = demo_app.support_lookups(replica, max(50, statements // 10), seed=42)
    output.console.print(f"{searches} searches by customer name on replica-1", highlight=False)
    report = psycopg.connect(replica, application_name="nightly-report")
    try:
        report.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        report.execute("SELECT count(*) FROM orders").fetchone()  # its snapshot stays until it ends
        held = report.execute("SELECT backend_xmin::text FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        xmin = held.fetchone()[0]
        with psycopg.connect(dsn, autocommit=True) as conn:
            # a slot no replica uses any more: it keeps every WAL segment from now on
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true) WHERE NOT EXISTS "
                         "(SELECT FROM pg_replication_slots WHERE slot_name = %s)", (SLOT, SLOT))  # fmt: skip
            _wait_for_feedback(conn, xmin)
            for _ in range(20):
                conn.execute("SELECT txid_current()")  # transactions the held xmin falls behind
        _pgops(dsn, "status", "--all", env={"PGOPS_POOL_REPORT_XMIN_AGE": "10"}, config=config)
    finally:
        report.close()
        with psycopg.connect(box.url(replica=1), autocommit=True) as admin:
            admin.execute("ALTER SYSTEM RESET hot_standby_feedback")
            admin.execute("ALTER SYSTEM RESET wal_receiver_status_interval")
            admin.execute("SELECT pg_reload_conf()")
        with psycopg.connect(dsn, autocommit=True) as conn:
            output.console.print(f"$ psql -c \"SELECT pg_drop_replication_slot('{SLOT}')\"", style="bold")
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                         (SLOT,))  # fmt: skip


def _wait_for_feedback(conn: psycopg.Connection, xmin: str, timeout: float = 30.0) -> None:
    """Until the replica's feedback carries the report's snapshot to the primary (every second, as set above)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.execute("SELECT bool_or(backend_xmin::text = %s) FROM pg_stat_replication", (xmin,)).fetchone()[0]:
            return
        time.sleep(0.2)


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
    replicas: int = typer.Option(
        0, "--replicas", min=0, max=1, help="With 1: a streaming replica too, its reads in the advice."
    ),
) -> None:
    """Start a sandbox, load the demo app, run its workload, and show each pgops job on it."""
    _title("a throwaway PostgreSQL" + (" with a streaming replica" if replicas else ""))
    output.console.print(
        f"$ pgops sandbox start --dir {directory}" + (f" --replicas {replicas}" if replicas else ""),
        style="bold",
        highlight=False,
    )
    box = Sandbox(directory, pg_bin)
    output.console.print(box.start(replicas=replicas), highlight=False)
    dsn = box.url(DATABASE)
    config = _targets_config(box, directory) if replicas else None

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

    if config is not None:
        _replica_part(box, dsn, config, statements)

    _title(
        ("index advice from pg_stat_statements of the primary and its replica, " if config else "index advice from "
         "pg_stat_statements, ") + ("estimated from pg_stats" if "hypopg" in missing else "validated with hypopg")
    )  # fmt: skip
    script = directory / "fix.sql"
    if config is not None:
        _pgops(dsn, "advise-indexes", "--all", stdout=script, config=config)
    else:
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
    if config is not None:
        output.console.print(f"The demo servers stay up: pgops --config {config} status --all", highlight=False)
    output.console.print(f"The demo database stays up: pgops --dsn {dsn} status", highlight=False)
    output.console.print(f"Stop it with: pgops sandbox stop --dir {directory}", highlight=False)
