"""Benchmark: pgops' batched cleanup against one big DELETE, with the application writing to the same table.

Identical tables of ROWS rows (default 4 M), half of them expired and spread over the whole heap, with an
index on expires_at. Writer processes insert new rows and update random existing ones (half of which are
expired) at a fixed rate and time every statement from when it was due. One run is --rounds rounds, each on
tables of its own:

  writers alone (--baseline-seconds)       → baseline   } the first --delete-rounds rounds only
  writers + `DELETE ... WHERE expires_at < now()`      }
  writers + the same DELETE on a table they do not touch } a control: what deleting costs them with no
                                                         } lock between them and the deleted rows
  writers alone, as a phase (--nothing-seconds)  a control: how far apart two measurements of the same thing
                                                 land, the least the comparison can tell
  writers alone                            → baseline
  writers + `pgops cleanup run` with the policy's defaults (or --target/--pause), a process of its own as in
            use, timed by its own summary

Every phase starts from a settled server: the writers pause, a CHECKPOINT writes the dirty buffers out and
the kernel writes its dirty pages to disk (sync). Without it, the writeback of what the setup and earlier
phases wrote lands in whichever phase comes next: in a probe's run without it, a phase in which nothing ran
at all measured 7.64x the baseline's p99 (one round 46.6x); in its next run, with it, 0.78x.

The last column is the mean time a writer statement spent waiting for a CPU, the writer's process and its
backend together (runnable but not running, from Linux's /proc/PID/schedstat; only with the server on this
machine). Set beside the p99, it tells a wait on the deleting transaction from a wait for a free core.

This machine is shared: a hiccup of a few milliseconds that stalls every writer at once puts 1 % of a
one-second phase's samples in its tail, so one pgops run's p99 says little. The verdict pools the samples of
all rounds (writers' p99 during every pgops run against their p99 in every baseline slice, the slices spread
between the runs so that they see the same machine) and compares the median round's rates. Targets for
pgops: writers' p99 ≤ 2x the baseline's, rows/s ≥ 30% of the big DELETE's.

    .venv/bin/python bench/cleanup.py                  # own sandbox in .pgops/bench-cleanup, stopped at the end
    .venv/bin/python bench/cleanup.py --dsn URL        # an existing server (creates and drops its own database)
    .venv/bin/python bench/cleanup.py --rows 200000    # a quick try
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgops.config import CleanupPolicy, parse_duration
from pgops.sandbox import Sandbox, recreate_database

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "pgops_bench_cleanup"
# 800 statements/s in all: a pgops phase lasts a second or two, and its p99 must rest on thousands of samples.
WRITERS = 4
RATE_PER_WRITER = 200  # statements per second each writer is due to send
MAX_OPS_PER_WRITER = 400_000  # a hard bound on the load loop besides its stop event


def write(dsn: str, id_range: int, slices: list[tuple[str, str]], current, stop, results, seed: int) -> None:
    """One writer process: statements on a fixed schedule against the table of the current slice (an index into
    `slices`, -1 for none), latencies recorded under the slice's phase name and sent to `results` at the end,
    with the time the writer and its backend waited for a CPU in each phase (see run_queue_wait).

    A statement's latency counts from when it was due, and a writer stuck behind a lock is charged for every
    statement that fell due meanwhile (no coordinated omission). What is not charged is the writer's own
    lateness in waking up to send a statement on time: the application runs on machines of its own, not on
    the database server's two cores, so its processes' scheduling is not the database's doing. Such a late
    start moves the writer's schedule on by as much."""
    rng = random.Random(seed)
    latencies: dict[str, list[float]] = {}
    queued: dict[str, float] = {}
    deadline = time.monotonic() + 1800
    scheduled, due, finished = -1, 0.0, 0.0
    with psycopg.connect(dsn, autocommit=True, application_name="bench-writer") as conn:
        processes = (os.getpid(), conn.info.backend_pid)
        waited = run_queue_wait(processes) if local_server(conn.info.backend_pid) else None
        for op in range(MAX_OPS_PER_WRITER):
            if stop.is_set() or time.monotonic() > deadline:
                break
            index = current.value
            if index != scheduled and waited is not None:  # the run-queue wait of the slice that ends
                now = run_queue_wait(processes)
                if scheduled >= 0 and now is not None:
                    queued[slices[scheduled][0]] = queued.get(slices[scheduled][0], 0.0) + now - waited
                waited = now
            if index < 0:
                scheduled = -1
                time.sleep(0.005)
                continue
            phase, table = slices[index]
            if index != scheduled:
                scheduled, due = index, time.perf_counter()
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            # ready to send at `due`, or when the previous statement finished if that was later
            late_start = time.perf_counter() - max(due, finished)
            if late_start > 0:
                due += late_start
            ident = sql.Identifier(table)
            if op % 2:
                conn.execute(
                    sql.SQL("UPDATE {} SET data = %s WHERE id = %s").format(ident),
                    (f"u{op}", rng.randint(1, id_range)),
                )
            else:
                conn.execute(
                    sql.SQL("INSERT INTO {} (user_id, data, expires_at) VALUES (%s, 'new', now() + '1 day')").format(
                        ident
                    ),
                    (rng.randint(1, 100_000),),
                )
            finished = time.perf_counter()
            # This statement, and every one that fell due while it was stuck (those are not sent late in a
            # burst: their latency is what the application would have seen).
            while due <= finished:
                latencies.setdefault(phase, []).append(finished - due)
                due += 1 / RATE_PER_WRITER
        if scheduled >= 0 and waited is not None and (now := run_queue_wait(processes)) is not None:
            queued[slices[scheduled][0]] = queued.get(slices[scheduled][0], 0.0) + now - waited
    results.put((latencies, queued))


def local_server(pid: int) -> bool:
    """Whether the backend `pid` runs on this machine (a PID of a server elsewhere may name a local process)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("postgres")
    except OSError:
        return False


def run_queue_wait(pids: tuple[int, ...]) -> float | None:
    """Seconds these processes have spent runnable but waiting for a CPU (Linux's /proc/PID/schedstat); None
    where the server is not on this machine or the kernel does not say."""
    try:
        return sum(int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) for pid in pids) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class Writers:
    """WRITERS processes (not threads: one GIL among them would couple their latencies) inserting and
    updating rows of the table of the current slice; `slices` are (phase, table) pairs, known in advance."""

    def __init__(self, dsn: str, id_range: int, slices: list[tuple[str, str]]) -> None:
        context = multiprocessing.get_context("fork")
        self.slices = slices
        self.current = context.Value("i", -1)
        self.stop = context.Event()
        self.results = context.Queue()
        self.processes = [
            context.Process(target=write, args=(dsn, id_range, slices, self.current, self.stop, self.results, seed))
            for seed in range(WRITERS)
        ]
        for process in self.processes:
            process.start()
        self.latencies: dict[str, list[float]] = {}
        self.queued: dict[str, float] = {}  # phase → seconds the writers and their backends waited for a CPU

    def switch(self, phase: str | None, table: str = "") -> None:
        self.current.value = -1 if phase is None else self.slices.index((phase, table))

    def finish(self) -> None:
        """Stop the writers and gather their latencies."""
        self.stop.set()
        for _ in self.processes:
            latencies, queued = self.results.get(timeout=60)
            for phase, values in latencies.items():
                self.latencies.setdefault(phase, []).extend(values)
            for phase, seconds in queued.items():
                self.queued[phase] = self.queued.get(phase, 0.0) + seconds
        for process in self.processes:
            process.join(timeout=30)


def settle(conn: psycopg.Connection, writers: Writers) -> None:
    """Pause the writers and write out what earlier phases left dirty (shared buffers, then the kernel's page
    cache), so that no phase pays for the writeback of another's writes."""
    writers.switch(None)
    conn.execute("CHECKPOINT")
    os.sync()  # the server's files, where it runs on this machine
    time.sleep(0.5)  # a moment of quiet before the next phase (the probe that measured the effect had it)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 100 else max(values)


def warm(conn: psycopg.Connection, table: str) -> None:
    """Read the table and its expiry index once, so no deletion phase starts with colder caches than another."""
    conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE expires_at < now()").format(sql.Identifier(table)))


def setup(dsn: str, rows: int, tables: list[str]) -> None:
    with psycopg.connect(recreate_database(dsn, DATABASE), autocommit=True) as conn:
        started = time.monotonic()
        # Half expired (minutes in the past), half live, interleaved over the whole heap.
        conn.execute(
            "CREATE UNLOGGED TABLE source AS SELECT g AS id, g %% 100000 AS user_id, md5(g::text) AS data, "
            "now() + (((g::bigint * 7919) %% 2000) - 1000 + 0.5) * interval '1 min' AS expires_at "
            "FROM generate_series(1, %s) g",
            (rows,),
        )
        for table in tables:
            ident = sql.Identifier(table)
            # Autovacuum off on these tables only, so it starts in no deletion phase and all compare alike
            # (pgops would pause for it); each table is vacuumed by hand before the phases.
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, user_id int, "
                    "data text, expires_at timestamptz) WITH (autovacuum_enabled = false)"
                ).format(ident)
            )
            conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM source").format(ident))
            conn.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", (table, rows))
            conn.execute(sql.SQL("CREATE INDEX ON {} (expires_at)").format(ident))
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ident))
        expired = conn.execute("SELECT count(*) FROM source WHERE expires_at < now()").fetchone()[0]
        conn.execute("DROP TABLE source")
        print(
            f"setup: {len(tables)} tables x {rows:,} rows ({expired:,} expired each) in "
            f"{time.monotonic() - started:.0f}s"
        )


def pgops_cleanup(dsn: str, table: str, policy: CleanupPolicy, during: Callable[[bool], None]) -> dict:
    """`pgops cleanup run` on `table` with `policy`'s batch settings, from a pgops.toml as a user writes it; its
    JSON summary (`seconds` is the run's own time, without the process' start). `during(True)` is called when
    its log says it starts deleting, `during(False)` when it shows the run's end, so that the writers' phase
    leaves out Python starting and exiting."""
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "pgops.toml"
        config.write_text(
            "[cleanup]\nready_made = []\n[cleanup.policies.bench]\n"
            f'table = "{table}"\nexpired_column = "expires_at"\nmax_runtime = "5m"\n'
            f'target_batch_duration = "{policy.target_batch_duration // timedelta(milliseconds=1)}ms"\n'
            f'pause = "{policy.pause // timedelta(milliseconds=1)}ms"\n'
        )
        command = [sys.executable, "-m", "pgops", "--config", str(config), "--dsn", dsn]
        command += ["cleanup", "run", "bench", "--format", "json"]
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
        ) as proc:  # fmt: skip
            assert proc.stdout is not None and proc.stderr is not None
            errors, started = [], False
            for line in proc.stderr:  # JSON lines: one when it starts deleting, one at the run's end
                if '"walk": ' in line and not started:
                    during(started := True)
                elif '"status": ' in line and started:
                    during(False)
                else:
                    errors.append(line.strip())
            summary = proc.stdout.read()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"pgops cleanup run failed ({proc.returncode}): {' '.join(errors)}")
    return json.loads(summary)[0]


def summary(phase: str, latencies: list[float], rate: float | None, base: float, queued: float | None) -> str:
    """One line of the table: rows/s, samples, p50 and p99 in ms, p99 against `base`, and the mean time a
    statement's writer and backend spent waiting for a CPU (`queued`: their total, in seconds)."""
    ms, rows_per_second = 1000, f"{rate:,.0f}" if rate else "-"
    waited = "-" if queued is None else f"{queued / len(latencies) * 1e6:,.0f}"
    return (
        f"{phase:<22}{rows_per_second:>12}{len(latencies):>12,}{statistics.median(latencies) * ms:>9.2f}"
        f"{p99(latencies) * ms:>9.2f}{p99(latencies) / base:>16.2f}x{waited:>15}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="superuser URL of a server to use (default: a sandbox of its own)")
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--rounds", type=int, default=12, help="pgops runs, each on a table of its own")
    parser.add_argument("--delete-rounds", type=int, default=3, help="big DELETEs, in the first rounds")
    parser.add_argument("--baseline-seconds", type=float, default=3, help="each slice of writers alone")
    parser.add_argument("--nothing-seconds", type=float, default=1.5, help="the control phase of writers alone")
    parser.add_argument("--target", help="target_batch_duration of pgops' policy (default: the policy's)")
    parser.add_argument("--pause", help="pause of pgops' policy (default: the policy's)")
    args = parser.parse_args()
    delete_rounds = min(args.delete_rounds, args.rounds)

    box, started_here = None, False
    dsn = args.dsn
    if dsn is None:
        box = Sandbox(ROOT / ".pgops" / "bench-cleanup")
        started_here = not box.running()
        dsn = box.start()
    policy = CleanupPolicy(table="", expired_column="expires_at")
    if args.target:
        policy = dataclasses.replace(policy, target_batch_duration=parse_duration(args.target))
    if args.pause:
        policy = dataclasses.replace(policy, pause=parse_duration(args.pause))
    label = f"{policy.target_batch_duration.total_seconds() * 1000:.0f}ms/{policy.pause.total_seconds() * 1000:.0f}ms"
    try:
        tables = [f"{kind}_{n}" for n in range(delete_rounds) for kind in ("big_delete", "elsewhere")]
        tables += [f"pgops_{n}" for n in range(args.rounds)]
        setup(dsn, args.rows, tables)
        bench_dsn = make_conninfo(dsn, dbname=DATABASE)
        slices = []
        for n in range(args.rounds):
            if n < delete_rounds:
                slices += [(f"baseline {n}", f"big_delete_{n}"), (f"big DELETE {n}", f"big_delete_{n}")]
                slices += [(f"DELETE elsewhere {n}", f"pgops_{n}")]
            slices += [(f"nothing {n}", f"pgops_{n}"), (f"baseline {n}", f"pgops_{n}"), (f"pgops {n}", f"pgops_{n}")]
        writers = Writers(bench_dsn, args.rows, slices)
        rates: dict[str, float] = {}
        try:
            for n in range(args.rounds):
                with psycopg.connect(bench_dsn, autocommit=True) as conn:
                    warm(conn, f"pgops_{n}")
                    if n < delete_rounds:
                        for table in (f"big_delete_{n}", f"elsewhere_{n}"):
                            warm(conn, table)
                        settle(conn, writers)
                        writers.switch(f"baseline {n}", f"big_delete_{n}")
                        time.sleep(args.baseline_seconds)
                        for phase, writes_to, table in (
                            (f"big DELETE {n}", f"big_delete_{n}", f"big_delete_{n}"),
                            (f"DELETE elsewhere {n}", f"pgops_{n}", f"elsewhere_{n}"),
                        ):
                            settle(conn, writers)
                            writers.switch(phase, writes_to)
                            started = time.monotonic()
                            delete = sql.SQL("DELETE FROM {} WHERE expires_at < now()").format(sql.Identifier(table))
                            deleted = conn.execute(delete).rowcount
                            rates[phase] = deleted / (time.monotonic() - started)
                    settle(conn, writers)
                    writers.switch(f"nothing {n}", f"pgops_{n}")
                    time.sleep(args.nothing_seconds)
                    settle(conn, writers)
                    writers.switch(f"baseline {n}", f"pgops_{n}")
                    time.sleep(args.baseline_seconds)
                    settle(conn, writers)
                outcome = pgops_cleanup(
                    bench_dsn,
                    f"public.pgops_{n}",
                    policy,
                    lambda on, n=n: writers.switch(f"pgops {n}" if on else None, f"pgops_{n}"),
                )
                rates[f"pgops {n}"] = outcome["rows_deleted"] / outcome["seconds"]
                print(
                    f"round {n}: pgops {label}: {outcome['status']}, {outcome['rows_deleted']:,} rows in "
                    f"{outcome['seconds']:.1f}s, {outcome['batches']} batches, {outcome['failed_batches']} failed, "
                    f"{outcome['redone_batches']} redone two-pass, throttled {outcome['throttled'] or 'never'}, "
                    f"walk {list(outcome['walks'].values())}, rows left {outcome['rows_left']}"
                )
        finally:
            writers.finish()

        print()
        print(
            f"{'phase':<22}{'rows/s':>12}{'writer ops':>12}{'p50 ms':>9}{'p99 ms':>9}{'p99 vs baseline':>17}"
            f"{'CPU wait us':>15}"
        )
        for n in range(args.rounds):
            base = p99(writers.latencies[f"baseline {n}"])
            for phase in (f"baseline {n}", f"big DELETE {n}", f"DELETE elsewhere {n}", f"nothing {n}", f"pgops {n}"):
                if phase in writers.latencies:
                    queued = writers.queued.get(phase)
                    print(summary(phase, writers.latencies[phase], rates.get(phase), base, queued))
        kinds = ("baseline", "big DELETE", "DELETE elsewhere", "nothing", "pgops")
        pooled = {
            kind: [v for n in range(args.rounds) for v in writers.latencies.get(f"{kind} {n}", [])] for kind in kinds
        }
        queued_in = {
            kind: sum(writers.queued[f"{kind} {n}"] for n in range(args.rounds) if f"{kind} {n}" in writers.queued)
            if writers.queued
            else None
            for kind in kinds
        }
        pgops_rate = statistics.median(rates[f"pgops {n}"] for n in range(args.rounds))
        delete_rate = statistics.median(rates[f"big DELETE {n}"] for n in range(delete_rounds))
        print()
        print("all rounds (rows/s: the median round's; latencies: every round's samples pooled)")
        base = p99(pooled["baseline"])
        print(summary("no cleanup", pooled["baseline"], None, base, queued_in["baseline"]))
        print(summary("big DELETE", pooled["big DELETE"], delete_rate, base, queued_in["big DELETE"]))
        print(summary("DELETE elsewhere", pooled["DELETE elsewhere"], None, base, queued_in["DELETE elsewhere"]))
        print(summary("nothing", pooled["nothing"], None, base, queued_in["nothing"]))
        print(summary(f"pgops {label}", pooled["pgops"], pgops_rate, base, queued_in["pgops"]))
        print()
        print(
            f"pgops {label}: rows/s vs one big DELETE {pgops_rate / delete_rate:.2f}x (target >= 0.30), "
            f"writers' p99 vs no cleanup {p99(pooled['pgops']) / base:.2f}x (target <= 2.00); "
            f"the big DELETE's p99 {p99(pooled['big DELETE']) / base:.0f}x"
        )
        print(
            f"control, a big DELETE on a table the writers do not touch: writers' p99 vs no cleanup "
            f"{p99(pooled['DELETE elsewhere']) / base:.2f}x; nothing running: {p99(pooled['nothing']) / base:.2f}x"
        )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        if box is not None and started_here:
            box.stop()


if __name__ == "__main__":
    main()
