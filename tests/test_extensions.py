"""The fixture database really has each extension working."""

import uuid

import psycopg
import pytest


def test_pg_stat_statements_records_a_query(conn):
    marker = f"pgops_marker_{uuid.uuid4().hex[:8]}"
    conn.execute(f"SELECT 1 AS {marker}")
    row = conn.execute(
        "SELECT calls FROM pg_stat_statements WHERE query LIKE %s AND dbid = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
        (f"%{marker}%",),
    ).fetchone()
    assert row is not None and row[0] >= 1


@pytest.mark.needs_pg_cron
def test_pg_cron_schedules_and_unschedules(pg_server, dbname):
    name = f"pgops-test-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.cron_dsn, autocommit=True) as cron:
        job = cron.execute(
            "SELECT cron.schedule_in_database(%s, '* * * * *', 'SELECT 1', %s)", (name, dbname)
        ).fetchone()[0]
        assert cron.execute("SELECT database FROM cron.job WHERE jobid = %s", (job,)).fetchone() == (dbname,)
        assert cron.execute("SELECT cron.unschedule(%s)", (job,)).fetchone() == (True,)
        assert cron.execute("SELECT count(*) FROM cron.job WHERE jobname = %s", (name,)).fetchone() == (0,)


@pytest.mark.needs_hypopg
def test_hypopg_changes_explain(conn):
    conn.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
    conn.execute("ANALYZE t")
    query = "EXPLAIN SELECT * FROM t WHERE id = 42"
    before = "\n".join(r[0] for r in conn.execute(query))
    assert "Seq Scan" in before
    conn.execute("SELECT * FROM public.hypopg_create_index('CREATE INDEX ON t (id)')")
    after = "\n".join(r[0] for r in conn.execute(query))
    assert "Index Scan" in after and "btree_t_id" in after
    conn.execute("SELECT public.hypopg_reset()")
