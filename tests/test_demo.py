import re
import tempfile
from pathlib import Path

import psycopg
import pytest

from pgops import demo, sandbox
from pgops.cli.demo import DATABASE
from pgops.errors import PgopsError
from pgops.sandbox import Sandbox
from tests.conftest import drop_database


def _fingerprint(conn: psycopg.Connection) -> tuple:
    return conn.execute(
        "SELECT (SELECT sum(amount) FROM fund_trades), (SELECT sum(total) FROM orders), "
        "(SELECT max(created_at) - min(created_at) FROM request_logs)"
    ).fetchone()


def test_the_same_seed_makes_the_same_data(conn):
    demo.load_schema(conn)
    fingerprints = []
    for seed in (0.25, 0.25, -0.5):
        demo.generate(conn, scale=0.01, seed=seed)
        fingerprints.append(_fingerprint(conn))
        tables = "funds, fund_trades, customers, orders, idempotency_keys, sessions, request_logs"
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]


def test_demo_schema_data_and_workload(conn, dsn):
    demo.load_schema(conn)
    demo.generate(conn, scale=0.01, seed=0.5)
    counts = dict(
        conn.execute(
            "SELECT 'customers', count(*) FROM customers UNION ALL SELECT 'orders', count(*) FROM orders "
            "UNION ALL SELECT 'expired keys', count(*) FROM idempotency_keys WHERE expires_at < now() "
            "UNION ALL SELECT 'keys', count(*) FROM idempotency_keys UNION ALL SELECT 'stats', count(*) FROM fund_stats"
        ).fetchall()
    )
    assert counts["customers"] == 1000 and counts["orders"] == 5000
    assert 0.4 < counts["expired keys"] / counts["keys"] < 0.6
    assert counts["stats"] == conn.execute("SELECT count(*) FROM funds").fetchone()[0]

    conn.execute("SELECT pg_stat_statements_reset()")
    result = demo.run_workload(dsn, statements=400, clients=2, seed=7)
    assert result.reads + result.writes == 400
    assert 0.75 < result.reads / 400 < 0.95
    recorded = {
        query: calls
        for query, calls in conn.execute(
            "SELECT query, calls FROM pg_stat_statements WHERE dbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    }
    lookup = "SELECT id, name FROM customers WHERE tenant_id = $1 AND email = $2"
    assert recorded.get(lookup, 0) > 50
    assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] > 5000


def test_pgops_demo_runs_every_job_end_to_end(pg_server, cli):
    """`pgops demo` (the README's first command ends with it) on the test sandbox, at a small scale."""
    if pg_server.sandbox_dir is None:
        pytest.skip("pgops demo runs on pgops' own sandbox; this session's server is another")
    result = cli("demo", "--dir", pg_server.sandbox_dir, "--scale", "0.02", "--statements", "300")
    try:
        assert result.exit_code == 0, result.stderr
        out = result.stdout + result.stderr
        assert "pgops schema: not installed → 0004" in out
        assert "watching public.fund_stats" in out
        assert "refreshed public.fund_stats" in out
        assert "1 idle in transaction" in out
        fix = (pg_server.sandbox_dir / "fix.sql").read_text()
        assert re.search(
            r'CREATE INDEX CONCURRENTLY IF NOT EXISTS "(customers_[a-z_0-9]+)" ON "public"."customers"', fix
        )
        assert re.search(r"s before fix.sql, .*s after \(\d+\.\dx\)", out)
        with psycopg.connect(pg_server.database_dsn(DATABASE), autocommit=True) as conn:
            indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'customers'")}
            built = re.findall(r'IF NOT EXISTS "(customers_[a-z_0-9]+)"', fix)
            assert built and set(built) <= indexes  # the advice on customers was applied
            assert conn.execute("SELECT count(*) FROM idempotency_keys WHERE expires_at < now()").fetchone() == (0,)
    finally:
        cli("--dsn", pg_server.database_dsn(DATABASE), "migrate", "--downgrade", "base")  # its pg_cron job
        drop_database(pg_server, DATABASE)


def test_pgops_demo_with_a_replica_shows_the_replica_part(cli):
    """`pgops demo --replicas 1`: the replica's reads in the merged advice, its feedback and a slot in status."""
    try:
        bindir = sandbox.find_bindir()
    except PgopsError as exc:
        pytest.skip(str(exc))
    if not (bindir / "pg_basebackup").is_file():
        pytest.skip(f"no pg_basebackup in {bindir}: a streaming replica is made with it")
    directory = Path(tempfile.mkdtemp(prefix="pgops-demo-replicas-"))  # under /tmp: the postgres user reaches it
    try:
        result = cli("demo", "--dir", directory, "--scale", "0.02", "--statements", "300", "--replicas", "1")
        assert result.exit_code == 0, result.stderr
        out = " ".join(result.stdout.replace("│", " ").split())  # a table cell's lines, joined
        assert re.search(r"primary: primary, 127\.0\.0\.1:\d+/pgops_demo as postgres", out)
        assert re.search(r"replica-1: standby, 127\.0\.0\.1:\d+/pgops_demo as postgres", out)
        assert re.search(r"the oldest snapshot is on target replica-1, pid \d+ \(application nightly-report", out)
        assert "old_replica (physical): inactive, retains " in out
        fix = (directory / "fix.sql").read_text()
        assert "-- sources: pg_stat_statements of primary, replica-1, merged" in fix
        assert re.search(
            r"--    ran on: replica-1 \d+ calls, [^\n]+\n--    \d+ calls, [^\n]+: SELECT id, tenant_id, email FROM "
            r'customers WHERE name = \$1\nCREATE INDEX CONCURRENTLY IF NOT EXISTS "\w+" ON "public"\."customers" '
            r'USING btree \("name"\);',
            fix,
        ), fix
    finally:
        Sandbox(directory).stop(remove=True)
