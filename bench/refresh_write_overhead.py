"""Write-path cost of keeping a materialized view fresh, measured side by side with pgbench.

16 clients run single-row UPDATEs of a 100k-row table that a materialized view aggregates, in three
configurations, interleaved over several rounds (median TPS per configuration):

  no trigger   the baseline
  no-op        a PL/pgSQL statement trigger that does nothing: the floor for any trigger-based design
  pgops        pgops' statement trigger (insert-only marks), with pgops' processor running at its defaults
               (process_due every refresh.interval, debounce and max-wait from [refresh])
  queue-upsert the design pgops replaces: a statement trigger upserting one queue row per view
  pgops 2s     pgops with max-wait 2s (debounce 1s, processor every 0.5s): under continuous writes the view is
               refreshed every ~2s, so the runs include the marking windows, the waits and the refreshes' own CPU

Every phase starts from a settled server: a CHECKPOINT writes out the dirty buffers and a sync the kernel's dirty
pages, so a phase doesn't measure the writeback of the setup's or an earlier phase's writes.

Besides TPS it prints the server's CPU per transaction (all its processes, from /proc, when the server runs on
this machine): on a machine shared with other work, TPS moves with their load, CPU per transaction less so.

Usage: .venv/bin/python bench/refresh_write_overhead.py [--dsn URL] [--rounds 3] [--seconds 10] [--clients 16]
Without --dsn it starts its own sandbox in .pgops/bench-refresh (stopped at the end). The database it creates
(pgops_bench_refresh) is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from pgops import migrate
from pgops.config import RefreshSettings, Settings
from pgops.refresh import process
from pgops.sandbox import Sandbox, recreate_database

ROOT = Path(__file__).resolve().parent.parent
DBNAME = "pgops_bench_refresh"
ROWS = 100_000
SCRIPT = "\\set id random(1, 100000)\nUPDATE accounts SET balance = balance + 1 WHERE id = :id;\n"

REFRESH_COUNT = "SELECT coalesce(sum(refresh_count), 0)::bigint FROM pgops.refresh_views"
QUEUE_UPSERT = """
CREATE TABLE IF NOT EXISTS refresh_queue (view_name text PRIMARY KEY, requested_at timestamptz NOT NULL);
CREATE OR REPLACE FUNCTION queue_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO refresh_queue (view_name, requested_at) VALUES ('account_stats', now())
    ON CONFLICT (view_name) DO UPDATE SET requested_at = now();
    RETURN NULL;
END $$;
CREATE TRIGGER queue_refresh AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION queue_refresh();
"""
NO_OP = """
CREATE OR REPLACE FUNCTION no_op() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER no_op BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION no_op();
"""


def pgbench_binary() -> str:
    found = shutil.which("pgbench") or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)), None
    )
    if not found:
        raise SystemExit("pgbench not found: install postgresql-client (Debian: apt-get install postgresql-15)")
    return found


@contextmanager
def server(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    box = Sandbox(ROOT / ".pgops" / "bench-refresh")
    started_here = not box.running()
    url = box.start()
    try:
        yield url
    finally:
        if started_here:
            box.stop()


def setup(admin_dsn: str) -> str:
    dsn = recreate_database(admin_dsn, DBNAME)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id integer PRIMARY KEY, grp integer NOT NULL, balance bigint NOT NULL)")
        conn.execute("INSERT INTO accounts SELECT i, i %% 100, 0 FROM generate_series(1, %s) i", (ROWS,))
        conn.execute(
            "CREATE MATERIALIZED VIEW account_stats AS "
            "SELECT grp, count(*) AS accounts, sum(balance) AS balance FROM accounts GROUP BY grp"
        )
        conn.execute("CREATE UNIQUE INDEX ON account_stats (grp)")
        conn.execute("VACUUM ANALYZE accounts")
    return dsn


def _stat(pid: int | str) -> list[str]:
    """/proc/PID/stat's fields after the command name (field 3, the state, first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def server_cpu(conn: psycopg.Connection) -> float | None:
    """CPU seconds the server has used: its processes alive or exited (a zombie still shows its own time; a
    reaped one is in the postmaster's children time). None when the server doesn't run on this machine."""
    backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    try:
        postmaster = _stat(backend)[1]
    except OSError:
        return None
    ticks = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = _stat(entry.name)
            except OSError:  # gone meanwhile: then reaped, and counted in the postmaster's children time
                continue
            if fields[1] == postmaster:
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
    fields = _stat(postmaster)
    ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])  # own + reaped children
    return ticks / os.sysconf("SC_CLK_TCK")


def run_pgbench(dsn: str, clients: int, seconds: int, script: Path) -> float:
    out = subprocess.run(
        [pgbench_binary(), "-n", "-M", "prepared", "-c", str(clients), "-j", "4", "-T", str(seconds),
         "-f", str(script), dsn],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if not match:
        raise SystemExit(f"can't read pgbench's TPS from:\n{out}")
    return float(match[1])


@contextmanager
def processor(dsn: str, settings: RefreshSettings) -> Iterator[None]:
    """pgops' daemon job at its defaults: process_due every `interval`."""
    stop = threading.Event()

    def loop() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                process.process_due(conn, settings, should_stop=stop.is_set)
                stop.wait(settings.interval.total_seconds())

    thread = threading.Thread(target=loop, name="pgops-processor")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def configure(conn: psycopg.Connection, name: str, settings: RefreshSettings) -> None:
    conn.execute("DROP TRIGGER IF EXISTS queue_refresh ON accounts")
    conn.execute("DROP TRIGGER IF EXISTS no_op ON accounts")
    conn.execute("SELECT pgops.unwatch('public.account_stats')")
    if name.startswith("pgops"):
        conn.execute("SELECT pgops.watch('public.account_stats', %s, %s, true)", (settings.debounce, settings.max_wait))
    elif name == "queue-upsert":
        conn.execute(QUEUE_UPSERT)
    elif name == "no-op":
        conn.execute(NO_OP)
    conn.execute("VACUUM accounts")
    conn.execute("VACUUM pgops.refresh_marks")
    settle(conn)


def settle(conn: psycopg.Connection) -> None:
    """Write out what the setup and earlier phases left dirty (shared buffers, then the kernel's page cache), so
    that no phase pays for the writeback of another's writes (as bench/cleanup.py does)."""
    conn.execute("CHECKPOINT")
    os.sync()  # the server's files, where it runs on this machine
    time.sleep(0.5)  # a moment of quiet before the phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="superuser URL of a server to use (default: a sandbox of its own)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()

    defaults = replace(Settings().refresh, cron_schedule="")  # the processor here, not pg_cron
    frequent = replace(
        defaults, debounce=timedelta(seconds=1), max_wait=timedelta(seconds=2), interval=timedelta(seconds=0.5)
    )
    configurations = {
        "no trigger": defaults,
        "no-op": defaults,
        "pgops": defaults,
        "queue-upsert": defaults,
        "pgops 2s": frequent,
    }
    names = tuple(configurations)
    tps: dict[str, list[float]] = {name: [] for name in names}
    refreshes: dict[str, list[int]] = {name: [] for name in names}
    cpu_us: dict[str, list[float]] = {name: [] for name in names}
    with server(args.dsn) as admin_dsn, tempfile.TemporaryDirectory() as tmp:
        dsn = setup(admin_dsn)
        migrate.upgrade(dsn, replace(Settings(), refresh=defaults))
        script = Path(tmp) / "update.sql"
        script.write_text(SCRIPT)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for round_no in range(args.rounds):
                    order = names if round_no % 2 == 0 else tuple(reversed(names))
                    for name in order:
                        settings = configurations[name]
                        configure(conn, name, settings)
                        cpu_before = server_cpu(conn)
                        if name.startswith("pgops"):
                            with processor(dsn, settings):
                                tps[name].append(run_pgbench(dsn, args.clients, args.seconds, script))
                            refreshes[name].append(conn.execute(REFRESH_COUNT).fetchone()[0])
                        else:
                            tps[name].append(run_pgbench(dsn, args.clients, args.seconds, script))
                        cpu_after = server_cpu(conn)
                        if cpu_before is not None and cpu_after is not None:
                            cpu_us[name].append((cpu_after - cpu_before) * 1e6 / (tps[name][-1] * args.seconds))
                        cpu = f"{cpu_us[name][-1]:>7.1f} us CPU/txn" if cpu_us[name] else ""
                        print(f"round {round_no + 1} {name:<12} {tps[name][-1]:>10.0f} TPS {cpu}", flush=True)
        finally:
            with psycopg.connect(admin_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DBNAME)))

    base = statistics.median(tps["no trigger"])
    print(
        f"\npgbench: {args.clients} clients, single-row UPDATEs of a {ROWS}-row table, materialized view over it; "
        f"{args.rounds} interleaved rounds x {args.seconds}s, median TPS"
    )
    base_cpu = statistics.median(cpu_us["no trigger"]) if cpu_us["no trigger"] else None
    print(f"{'configuration':<14}{'median TPS':>12}{'ratio':>8}{'CPU us/txn':>12}{'ratio':>8}   runs (TPS)")
    for name in names:
        median = statistics.median(tps[name])
        runs = ", ".join(f"{v:.0f}" for v in tps[name])
        cpu = statistics.median(cpu_us[name]) if cpu_us[name] else None
        # CPU ratio as no trigger's CPU over this one's, so that like TPS, 1.00 is no cost and lower is worse
        cpu_cols = f"{cpu:>12.1f}{base_cpu / cpu:>8.2f}" if cpu and base_cpu else f"{'':>20}"
        print(f"{name:<14}{median:>12.0f}{median / base:>8.2f}{cpu_cols}   {runs}")
    for name in names:
        if refreshes[name]:
            print(f"refreshes of the view per {args.seconds}s run, {name}: {refreshes[name]}")


if __name__ == "__main__":
    main()
