"""Benchmark: one pool report (sample + analyze) with 200 client connections open, against the 300 ms target.

Opens 200 connections to the test sandbox (max_connections = 300) in a mix of states: idle, idle in a
transaction, running pg_sleep, waiting on a row lock behind one holder, holding a REPEATABLE READ snapshot.
Then times the report RUNS times, and prints median and p95 next to the target as ratios, with the share of
the catalog read and of the pure analysis. Everything it opens is closed and its database dropped at the end.

Run: .venv/bin/python bench/pool_report.py
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import uuid
from contextlib import suppress
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pgops.config import Settings  # noqa: E402
from pgops.pool_report import open_connection  # noqa: E402
from pgops.pool_report.analyze import analyze  # noqa: E402
from pgops.pool_report.sample import take_sample  # noqa: E402
from pgops.sandbox import Sandbox, drop_database, recreate_database  # noqa: E402

RUNS = 30
TARGET_MS = 300.0
MIX = {"idle": 120, "idle in transaction": 40, "pg_sleep": 20, "lock waiters": 10, "snapshots": 9}  # + 1 holder


class Held:
    """The benchmark's connections and the threads running their blocking statements."""

    def __init__(self) -> None:
        self.connections: list[psycopg.Connection] = []
        self.threads: list[threading.Thread] = []

    def close(self) -> None:
        """Cancel every statement, let the threads see it, then close the connections."""
        for conn in self.connections:
            conn.cancel()
        for thread in self.threads:
            thread.join(timeout=10)
        for conn in self.connections:
            conn.close()


def open_sessions(dsn: str, held: Held) -> None:
    """Open the 200 connections in their states; `held` keeps them for `Held.close`."""

    def connect(autocommit: bool = True, **kwargs: object) -> psycopg.Connection:
        conn = psycopg.connect(dsn, autocommit=autocommit, **kwargs)
        held.connections.append(conn)
        return conn

    def background(conn: psycopg.Connection, statement: str) -> None:
        def run() -> None:
            with suppress(psycopg.errors.QueryCanceled):
                conn.execute(statement)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        held.threads.append(thread)

    for i in range(MIX["idle"]):
        connect(application_name=f"web-{i % 6}")
    for _ in range(MIX["idle in transaction"]):
        connect(autocommit=False, application_name="worker").execute("SELECT 1")
    for _ in range(MIX["pg_sleep"]):
        background(connect(application_name="report"), "SELECT pg_sleep(120)")
    holder = connect(autocommit=False, application_name="holder")
    holder.execute("UPDATE bench_accounts SET balance = balance + 1 WHERE id = 1")
    for _ in range(MIX["lock waiters"]):
        background(connect(application_name="checkout"), "UPDATE bench_accounts SET balance = 0 WHERE id = 1")
    for _ in range(MIX["snapshots"]):
        snapshot = connect(autocommit=False, application_name="export")
        snapshot.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snapshot.execute("SELECT count(*) FROM bench_accounts")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    box = Sandbox(ROOT / ".pgops" / "test-sandbox")
    started_here = not box.running()
    admin_dsn = box.start()
    dbname = f"pgops_bench_{uuid.uuid4().hex[:8]}"
    settings = Settings()
    try:
        dsn = recreate_database(admin_dsn, dbname)
        with psycopg.connect(dsn, autocommit=True) as setup:
            setup.execute("CREATE TABLE bench_accounts (id int PRIMARY KEY, balance int)")
            setup.execute("INSERT INTO bench_accounts VALUES (1, 0)")
        held = Held()
        try:
            opening = time.perf_counter()
            open_sessions(dsn, held)
            opened_in = time.perf_counter() - opening
            totals, samples, analyses = [], [], []
            with open_connection(dsn, settings) as conn:
                for _ in range(RUNS):
                    begin = time.perf_counter()
                    sample = take_sample(conn)
                    sampled = time.perf_counter()
                    report = analyze(sample, settings.pool_report)
                    end = time.perf_counter()
                    samples.append((sampled - begin) * 1000)
                    analyses.append((end - sampled) * 1000)
                    totals.append((end - begin) * 1000)
            print(f"pool report at {report.total} client connections ({len(report.problems)} problems found), "
                  f"{RUNS} runs; sessions opened in {opened_in:.1f}s")  # fmt: skip
            median, p95 = statistics.median(totals), percentile(totals, 0.95)
            print(f"  sample + analyze   median {median:7.1f} ms   p95 {p95:7.1f} ms   target {TARGET_MS:.0f} ms")
            print(f"  median / target    {median / TARGET_MS:7.3f}      p95 / target {p95 / TARGET_MS:7.3f}")
            sample_ms, analyze_ms = statistics.median(samples), statistics.median(analyses)
            print(f"  medians per part   sample {sample_ms:.1f} ms ({sample_ms / median:.0%} of the total median), "
                  f"analyze {analyze_ms:.1f} ms ({analyze_ms / median:.0%})")  # fmt: skip
            print(f"  verdict            {'under' if p95 < TARGET_MS else 'OVER'} the target at p95")
        finally:
            held.close()
    finally:
        drop_database(admin_dsn, dbname)
        if started_here:
            box.stop()


if __name__ == "__main__":
    main()
