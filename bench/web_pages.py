"""The daemon's pages under load, and what serving them costs an idle daemon.

1. Render time: a database with 5,000 distinct statements in pg_stat_statements and 200 idle client connections;
   the daemon (default jobs) serves each page `--requests` times; the time is the daemon's own (its
   Server-Timing header: reading through the jobs' layers and rendering), median and max, against 200 ms.
2. Idle cost, side by side in one run: three daemons with the default jobs on databases of their own, one with
   `[web] enabled = false`, one serving pages nobody opens, one whose six pages are each opened every
   `--view-every` seconds; RSS and CPU from /proc every second for `--seconds`, against the daemon bench's
   targets (bench/daemon_idle.py).

    .venv/bin/python bench/web_pages.py [--requests 20] [--seconds 60] [--view-every 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon_idle import fresh_database, print_idle, sample_idle, wait_healthy

from pgops import demo
from pgops.sandbox import Sandbox, free_port

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["/", "/connections", "/refresh", "/cleanup", "/advice", "/workload"]
TARGET_MS = 200.0
COLUMNS = 100


def _daemon(url: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PGOPS_", "NOTIFY_", "WATCHDOG_"))}
    environment.update({"PGOPS_DATABASE_URL": url, **(env or {})})
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgops", "daemon", "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT / ".pgops",  # no pgops.toml there: the default jobs and settings
        env=environment,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base + "/healthz")
    return proc, base


def _get(url: str) -> tuple[float, float]:
    """(the daemon's own render time in ms, the client's wall time in ms)."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
        timing = response.headers["Server-Timing"]
    wall = (time.perf_counter() - started) * 1000
    return float(timing.split("dur=")[1]), wall


def _statements(url: str, count: int) -> int:
    """`count` distinct statements (a different column read or filtered on: a different queryid); the number of
    entries pg_stat_statements then holds."""
    with psycopg.connect(url, autocommit=True) as conn:
        columns = ", ".join(f"c{i} int" for i in range(COLUMNS))
        conn.execute(f"CREATE TABLE wide (id int PRIMARY KEY, {columns})")
        values = ", ".join(f"(n * {i}) % 97" for i in range(COLUMNS))
        conn.execute(f"INSERT INTO wide SELECT n, {values} FROM generate_series(1, 1000) n")
        conn.execute("ANALYZE wide")
        made = 0
        for i in range(COLUMNS):
            for j in range(COLUMNS):
                if made == count:
                    break
                conn.execute(f"SELECT c{i} FROM wide WHERE c{j} = %s", (made % 97,)).fetchall()
                made += 1
        held = "SELECT count(*) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s"
        return conn.execute(held, (conn.info.dbname,)).fetchone()[0]


def render_times(box: Sandbox, requests: int, entries: int, connections: int) -> None:
    url = fresh_database(box, "bench_web_render")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")  # the sandbox's earlier runs' entries: not this bench's
        demo.load_schema(conn)
        demo.generate(conn, scale=0.01)
    demo.run_workload(url, statements=1000, clients=2, seed=19)
    held = _statements(url, entries)
    idle = [psycopg.connect(url, autocommit=True, application_name=f"bench-idle-{n % 10}") for n in range(connections)]
    proc, base = _daemon(url)
    try:
        with psycopg.connect(url) as conn:
            sessions = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
            total = sessions.fetchone()[0]
        for page in PAGES:  # the first of each loads its modules: not what a person waits for the next time
            _get(base + page)
        print(
            f"page render, the daemon's own time (Server-Timing), median of {requests} requests each; "
            f"{held:,} pg_stat_statements entries, {total} client connections ({connections} idle held by the "
            f"bench); target < {TARGET_MS:.0f} ms"
        )
        print(f"{'page':<14}{'median ms':>10}{'max ms':>9}{'wall ms':>9}{'vs target':>11}")
        for page in PAGES:
            times = [_get(base + page) for _ in range(requests)]
            server = [t for t, _ in times]
            median = statistics.median(server)
            verdict = "met" if median < TARGET_MS else "MISSED"
            wall = statistics.median(w for _, w in times)
            print(f"{page:<14}{median:>10.1f}{max(server):>9.1f}{wall:>9.1f}{median / TARGET_MS:>10.2f}x  {verdict}")
    finally:
        proc.terminate()
        proc.wait(15)
        for conn in idle:
            conn.close()


def _viewer(base: str, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        for page in PAGES:
            _get(base + page)


def idle_cost(box: Sandbox, seconds: int, every: float) -> None:
    entries = {
        "no pages": {"PGOPS_WEB_ENABLED": "false"},
        "pages, unopened": {},
        f"pages, each every {every:g}s": {},
    }
    processes: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    stop = threading.Event()
    try:
        for index, (name, env) in enumerate(entries.items()):
            processes[name] = _daemon(fresh_database(box, f"bench_web_idle_{index}"), env)
        time.sleep(2)  # past startup
        viewer_base = processes[f"pages, each every {every:g}s"][1]
        _get(viewer_base + "/")  # loads the pages' modules before the measurement, as a first visit would
        viewer = threading.Thread(target=_viewer, args=(viewer_base, every, stop), daemon=True)
        viewer.start()
        measured, elapsed = sample_idle({name: proc for name, (proc, _) in processes.items()}, seconds)
    finally:
        stop.set()
        for proc, _ in processes.values():
            proc.terminate()
            proc.wait(15)
    print()
    print_idle(measured, elapsed, ", side by side")


def _room_for(box: Sandbox, entries: int) -> None:
    """pg_stat_statements keeps `pg_stat_statements.max` entries (5,000 by default) and evicts some when full: room
    for the bench's statements and the rest (a server setting: restart the sandbox once)."""
    wanted = 2 * entries
    with psycopg.connect(box.url(), autocommit=True) as conn:
        current = int(conn.execute("SHOW pg_stat_statements.max").fetchone()[0])
        if current < wanted:
            conn.execute(f"ALTER SYSTEM SET pg_stat_statements.max = {int(wanted)}")
    if current < wanted:
        box.stop()
        box.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--view-every", type=float, default=10.0)
    args = parser.parse_args()
    box = Sandbox(ROOT / ".pgops" / "bench-web-pages")
    box.start()
    _room_for(box, args.entries)
    try:
        render_times(box, args.requests, args.entries, args.connections)
        idle_cost(box, args.seconds, args.view_every)
    finally:
        box.stop()


if __name__ == "__main__":
    main()
