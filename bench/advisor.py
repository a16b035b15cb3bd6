"""Index advisor benchmark: time to analyze 5,000 pg_stat_statements entries of realistic shapes (fed as
workload entries through the same code path as `advise`), without hypopg and with it; and the demo workload's
speed-up from applying the advisor's fix.sql with psql.

Run: .venv/bin/python bench/advisor.py [--entries 5000] [--scale 0.2] [--statements 2000]
Uses PGOPS_BENCH_DSN's server when set, else the sandbox in .pgops/test-sandbox (started and stopped here
when it is not already running). Creates and drops its own databases.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pgops import demo  # noqa: E402
from pgops.advisor.model import AdvisorOptions, Statement  # noqa: E402
from pgops.advisor.run import advise, analyze_workload  # noqa: E402
from pgops.advisor.script import render_sql  # noqa: E402
from pgops.config import DatabaseSettings, Settings  # noqa: E402
from pgops.db import ConnectOptions, connect  # noqa: E402
from pgops.sandbox import Sandbox, drop_database, recreate_database  # noqa: E402

ORDER_COLUMNS = ["id", "customer_id", "status", "total", "created_at"]
CUSTOMER_COLUMNS = ["id", "tenant_id", "email", "name", "created_at"]
LOG_COLUMNS = ["id", "tenant_id", "path", "status", "duration_ms", "created_at"]


def _columns(rnd: random.Random, columns: list[str], alias: str = "") -> str:
    chosen = rnd.sample(columns, rnd.randint(1, len(columns)))
    return ", ".join(f"{alias}{c}" for c in chosen)


def _in_list(start: int, length: int) -> str:
    return ", ".join(f"${n}" for n in range(start, start + length))


def _shapes(rnd: random.Random) -> list[str]:
    """One of each shape an ORM-backed multi-tenant app sends, with varying select lists and IN lists."""
    n = rnd.randint(1, 40)
    comment = f"/* controller={rnd.choice(['orders', 'customers', 'reports', 'api'])},action=a{rnd.randint(1, 99)} */ "
    return [
        f"SELECT {_columns(rnd, CUSTOMER_COLUMNS)} FROM customers WHERE tenant_id = $1 AND email = $2",
        f"{comment}SELECT {_columns(rnd, ORDER_COLUMNS)} FROM orders WHERE customer_id IN ({_in_list(1, n)})",
        f"SELECT {_columns(rnd, ORDER_COLUMNS, 'o.')} FROM orders o JOIN customers c ON c.id = o.customer_id "
        f"WHERE c.tenant_id = $1 AND o.status = $2 ORDER BY o.created_at DESC LIMIT $3",
        f"SELECT {_columns(rnd, ORDER_COLUMNS)} FROM orders WHERE customer_id = $1 ORDER BY created_at DESC "
        f"LIMIT $2 OFFSET {rnd.randint(0, 500)}",
        f"SELECT count(*) FROM request_logs WHERE tenant_id = $1 AND status >= $2 AND created_at >= $3"
        f"{' AND path = $4' if rnd.random() < 0.5 else ''}",
        f"SELECT {_columns(rnd, LOG_COLUMNS)} FROM request_logs WHERE created_at BETWEEN $1 AND $2 "
        f"ORDER BY created_at LIMIT {rnd.randint(10, 1000)}",
        f"WITH recent AS (SELECT customer_id, sum(total) AS spent FROM orders WHERE created_at >= $1 "
        f"GROUP BY customer_id) SELECT c.email, r.spent FROM recent r JOIN customers c ON c.id = r.customer_id "
        f"WHERE c.tenant_id = $2 ORDER BY r.spent DESC LIMIT {rnd.randint(5, 50)}",
        f"UPDATE orders SET status = $1{', total = $3' if rnd.random() < 0.5 else ''} WHERE id = $2",
        f"INSERT INTO request_logs (tenant_id, path, status, duration_ms) VALUES {_values(rnd.randint(1, 20))}",
        f"SELECT response FROM idempotency_keys WHERE key = $1{' AND expires_at > now()' if n % 2 else ''}",
        f"DELETE FROM idempotency_keys WHERE expires_at < $1 AND key IN ({_in_list(2, n)})",
        f"SELECT id, data FROM sessions WHERE user_id = $1 AND expires_at > $2 LIMIT {n}",
        rnd.choice(["BEGIN", "COMMIT", "SET application_name = $1", "SHOW work_mem", "<insufficient privilege>"]),
        f"SELECT fund_id, name, trades, volume FROM fund_stats ORDER BY volume DESC LIMIT {n}",
    ]


def _values(rows: int) -> str:
    return ", ".join(f"(${4 * r + 1}, ${4 * r + 2}, ${4 * r + 3}, ${4 * r + 4})" for r in range(rows))


def synthetic_entries(count: int, seed: int = 5) -> list[Statement]:
    """Distinct statement texts like pg_stat_statements keeps (one entry per IN-list length, select list,
    comment...), with calls and total time drawn from a long-tailed distribution."""
    rnd = random.Random(seed)
    seen: set[str] = set()
    entries: list[Statement] = []
    for attempt in itertools.count():
        if len(entries) >= count or attempt > count * 50:
            break
        for query in _shapes(rnd):
            if query in seen or len(entries) >= count:
                continue
            seen.add(query)
            calls = int(rnd.paretovariate(1.2) * 10)
            entries.append(
                Statement(query, calls, calls * rnd.uniform(0.05, 20.0), calls, source="synthetic", queryid=attempt)
            )
    return entries


def _database(server_dsn: str) -> str:
    return recreate_database(server_dsn, f"pgops_bench_{uuid.uuid4().hex[:8]}", ("pg_stat_statements", "hypopg"))


def _drop(server_dsn: str, dsn: str) -> None:
    drop_database(server_dsn, str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--statements", type=int, default=2000)
    args = parser.parse_args()
    with ExitStack() as stack:
        server = os.environ.get("PGOPS_BENCH_DSN")
        if not server:
            box = Sandbox(ROOT / ".pgops" / "test-sandbox")
            started = not box.running()
            server = box.start()
            if started:
                stack.callback(box.stop)
        dsn = _database(server)
        stack.callback(_drop, server, dsn)
        settings = Settings(database=DatabaseSettings(url=dsn))
        with psycopg.connect(dsn, autocommit=True) as conn:
            demo.load_schema(conn)
            demo.generate(conn, scale=args.scale)
            sizes = (
                conn.execute("SELECT count(*) FROM customers").fetchone()[0],
                conn.execute("SELECT count(*) FROM orders").fetchone()[0],
            )
        print(f"demo data at scale {args.scale}: {sizes[0]:,} customers, {sizes[1]:,} orders")

        entries = synthetic_entries(args.entries)
        timings = {}
        for label, use_hypopg in (("without hypopg", False), ("with hypopg", True)):
            with connect(
                dsn, settings.database, ConnectOptions(statement_timeout=settings.advisor.statement_timeout)
            ) as conn:
                started_at = time.perf_counter()
                advice = analyze_workload(conn, settings, entries, AdvisorOptions(use_hypopg=use_hypopg))
                timings[label] = time.perf_counter() - started_at
            print(
                f"{len(entries):,} entries {label}: {timings[label]:.2f} s "
                f"({len(entries) / timings[label]:,.0f} entries/s; {advice.analyzed:,} analyzed, "
                f"{len(advice.skipped):,} skipped, {len(advice.recommendations)} indexes proposed)"
            )
        ratio = timings["with hypopg"] / timings["without hypopg"]
        print(
            f"hypopg validation costs {ratio:.1f}x the time of the rules; target without hypopg: < 10 s "
            f"({'met' if timings['without hypopg'] < 10 else 'MISSED'})"
        )

        before = demo.run_workload(dsn, statements=args.statements, clients=2, seed=11)
        advice = advise(dsn, settings, AdvisorOptions(min_calls=5))
        with tempfile.TemporaryDirectory() as folder:
            fix = Path(folder) / "fix.sql"
            fix.write_text(render_sql(advice))
            psql = shutil.which("psql") or "psql"
            subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(fix)], check=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ANALYZE")
        after = demo.run_workload(dsn, statements=args.statements, clients=2, seed=11)
        print("fix.sql: " + "; ".join(r.candidate.describe() for r in advice.recommendations))
        print(
            f"demo workload of {args.statements:,} statements: {before.seconds:.2f} s before fix.sql, "
            f"{after.seconds:.2f} s after: {before.seconds / after.seconds:.1f}x faster"
        )


if __name__ == "__main__":
    main()
