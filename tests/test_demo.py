import re

import psycopg
import pytest

from pgops import demo
from pgops.cli.demo import DATABASE
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
        assert "pgops schema: not installed → 0002" in out
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
