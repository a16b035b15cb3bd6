"""Benchmark: pgops' batched cleanup against one big DELETE, with the application writing to the same table.

Three identical tables of ROWS rows (default 4 M), half of them expired and spread over the whole heap, with an
index on expires_at. Writer threads insert new rows and update random existing ones (half of which are
expired) at a fixed rate and time every statement from when it was due. One run, three phases:

  1. writers alone                        → baseline p99
  2. writers + `DELETE ... WHERE expires_at < now()` on table A (one statement)
  3. writers + pgops cleanup (run_policy) on table B with the default target_batch_duration and pause
  4. writers + pgops cleanup on table C with a shorter target and pause (--target, --pause)

It prints rows/s of every deletion and the writers' p99 in each phase, as ratios. Targets: p99 during pgops
≤ 2x baseline, pgops rows/s ≥ 30% of the big DELETE's.

    .venv/bin/python bench/cleanup.py                  # own sandbox in .pgops/bench-cleanup, stopped at the end
    .venv/bin/python bench/cleanup.py --dsn URL        # an existing server (creates and drops its own database)
    .venv/bin/python bench/cleanup.py --rows 200000    # a quick try
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgops.cleanup.runner import run_policy
from pgops.config import CleanupPolicy, CleanupSettings, Settings, parse_duration
from pgops.sandbox import Sandbox, recreate_database

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "pgops_bench_cleanup"
WRITERS = 4
RATE_PER_WRITER = 100  # statements per second each writer is due to send
MAX_OPS_PER_WRITER = 400_000  # a hard bound on the load loop besides its stop event


@dataclass
class Writers:
    """Threads inserting and updating rows of `table`, recording each statement's latency under `phase`."""

    dsn: str
    id_range: int
    table: str = ""
    phase: str | None = None
    latencies: dict[str, list[float]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, seed: int) -> None:
        """Statements on a fixed schedule; latency counts from when a statement was due, and a writer stuck
        behind a lock is charged for every statement that fell due meanwhile (no coordinated omission)."""
        rng = random.Random(seed)
        deadline = time.monotonic() + 1800
        schedule_phase, due = None, 0.0
        with psycopg.connect(self.dsn, autocommit=True, application_name="bench-writer") as conn:
            for op in range(MAX_OPS_PER_WRITER):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                phase, table = self.phase, self.table
                if phase is None:
                    time.sleep(0.05)
                    continue
                if phase != schedule_phase:
                    schedule_phase, due = phase, time.perf_counter()
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                ident = sql.Identifier(table)
                if op % 2:
                    conn.execute(
                        sql.SQL("UPDATE {} SET data = %s WHERE id = %s").format(ident),
                        (f"u{op}", rng.randint(1, self.id_range)),
                    )
                else:
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {} (user_id, data, expires_at) VALUES (%s, 'new', now() + '1 day')"
                        ).format(ident),
                        (rng.randint(1, 100_000),),
                    )
                finished = time.perf_counter()
                # This statement, and every one that fell due while it was stuck (those are not sent late
                # in a burst: their latency is what the application would have seen).
                missed = []
                while due <= finished:
                    missed.append(finished - due)
                    due += 1 / RATE_PER_WRITER
                with self.lock:
                    self.latencies.setdefault(phase, []).extend(missed)

    def switch(self, phase: str | None, table: str = "") -> None:
        self.table, self.phase = table or self.table, phase


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 100 else max(values)


PGOPS_TABLES = ("pgops_default", "pgops_tuned")


def warm(conn: psycopg.Connection, table: str) -> None:
    """Read the table and its expiry index once, so no deletion phase starts with colder caches than another."""
    conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE expires_at < now()").format(sql.Identifier(table)))


def setup(dsn: str, rows: int) -> None:
    with psycopg.connect(recreate_database(dsn, DATABASE), autocommit=True) as conn:
        started = time.monotonic()
        # Autovacuum off on these tables only, so it starts in no deletion phase and all compare alike (pgops
        # would pause for it); each table is vacuumed by hand before the phases.
        conn.execute(
            "CREATE TABLE big_delete (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, user_id int, "
            "data text, expires_at timestamptz) WITH (autovacuum_enabled = false)"
        )
        # Half expired (minutes in the past), half live, interleaved over the whole heap.
        conn.execute(
            "INSERT INTO big_delete (id, user_id, data, expires_at) SELECT g, g %% 100000, md5(g::text), "
            "now() + (((g::bigint * 7919) %% 2000) - 1000 + 0.5) * interval '1 min' FROM generate_series(1, %s) g",
            (rows,),
        )
        for table in ("big_delete", *PGOPS_TABLES):
            ident = sql.Identifier(table)
            if table != "big_delete":
                conn.execute(
                    sql.SQL("CREATE TABLE {} (LIKE big_delete INCLUDING ALL) WITH (autovacuum_enabled = false)").format(
                        ident
                    )
                )
                conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM big_delete").format(ident))
            conn.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", (table, rows))
            conn.execute(sql.SQL("CREATE INDEX ON {} (expires_at)").format(ident))
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ident))
        expired = conn.execute("SELECT count(*) FROM big_delete WHERE expires_at < now()").fetchone()[0]
        print(f"setup: 3 tables x {rows:,} rows ({expired:,} expired each) in {time.monotonic() - started:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="superuser URL of a server to use (default: a sandbox of its own)")
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--baseline-seconds", type=float, default=20)
    parser.add_argument("--target", default="50ms", help="target_batch_duration of the tuned pgops phase")
    parser.add_argument("--pause", default="10ms", help="pause of the tuned pgops phase")
    args = parser.parse_args()

    box, started_here = None, False
    dsn = args.dsn
    if dsn is None:
        box = Sandbox(ROOT / ".pgops" / "bench-cleanup")
        started_here = not box.running()
        dsn = box.start()
    default = CleanupPolicy(table="", expired_column="expires_at", max_runtime=timedelta(minutes=5))
    tuned = dataclasses.replace(
        default, target_batch_duration=parse_duration(args.target), pause=parse_duration(args.pause)
    )
    as_ms = "{:.0f}ms".format
    default_label = (
        f"{as_ms(default.target_batch_duration.total_seconds() * 1000)}/{as_ms(default.pause.total_seconds() * 1000)}"
    )
    pgops_phases = {
        f"pgops {default_label}": ("pgops_default", default),
        f"pgops {args.target}/{args.pause}": ("pgops_tuned", tuned),
    }
    try:
        setup(dsn, args.rows)
        bench_dsn = make_conninfo(dsn, dbname=DATABASE)
        writers = Writers(bench_dsn, id_range=args.rows)
        threads = [threading.Thread(target=writers.run, args=(seed,), daemon=True) for seed in range(WRITERS)]
        for thread in threads:
            thread.start()
        results: dict[str, tuple[int, float]] = {}
        try:
            writers.switch("baseline", "pgops_default")
            time.sleep(args.baseline_seconds)
            results["baseline"] = (0, args.baseline_seconds)

            with psycopg.connect(bench_dsn, autocommit=True) as conn:
                warm(conn, "big_delete")
                writers.switch("big DELETE", "big_delete")
                started = time.monotonic()
                deleted = conn.execute("DELETE FROM big_delete WHERE expires_at < now()").rowcount
                results["big DELETE"] = (deleted, time.monotonic() - started)
                writers.switch(None)

            settings = Settings(cleanup=CleanupSettings(ready_made=[]))
            for phase, (table, policy) in pgops_phases.items():
                with psycopg.connect(bench_dsn, autocommit=True) as conn:
                    warm(conn, table)
                writers.switch(phase, table)
                outcome = run_policy(bench_dsn, table, dataclasses.replace(policy, table=f"public.{table}"), settings)
                writers.switch(None)
                results[phase] = (outcome.rows_deleted, outcome.seconds)
                print(
                    f"{phase} (target_batch_duration/pause): {outcome.status}, {outcome.batches} batches, "
                    f"{outcome.failed_batches} failed, throttled {outcome.throttled or 'never'}, "
                    f"walk {outcome.walks}, rows left {outcome.rows_left}"
                )
        finally:
            writers.stop.set()
            for thread in threads:
                thread.join(timeout=30)

        base = p99(writers.latencies["baseline"])
        print()
        print(
            f"{'phase':<20}{'rows deleted':>14}{'seconds':>9}{'rows/s':>11}{'writer ops':>12}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'p99 vs baseline':>17}"
        )
        for phase in results:
            lat = writers.latencies.get(phase, [])
            rows, seconds = results[phase]
            rate = f"{rows / seconds:,.0f}" if rows else "-"
            print(
                f"{phase:<20}{rows:>14,}{seconds:>9.1f}{rate:>11}{len(lat):>12,}{statistics.median(lat) * 1000:>9.2f}"
                f"{p99(lat) * 1000:>9.2f}{p99(lat) / base:>16.2f}x"
            )
        big_rate = results["big DELETE"][0] / results["big DELETE"][1]
        print()
        print(f"writers' p99 during the big DELETE vs no cleanup: {p99(writers.latencies['big DELETE']) / base:.2f}x")
        for phase in pgops_phases:
            rate = results[phase][0] / results[phase][1]
            during = p99(writers.latencies[phase]) / base
            print(
                f"{phase}: rows/s vs one big DELETE {rate / big_rate:.2f}x (target >= 0.30), "
                f"writers' p99 vs no cleanup {during:.2f}x (target <= 2.00)"
            )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        if box is not None and started_here:
            box.stop()


if __name__ == "__main__":
    main()
