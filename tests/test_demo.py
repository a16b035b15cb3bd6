from pgops import demo


def test_demo_schema_data_and_workload(conn, dsn):
    demo.load_schema(conn)
    demo.generate(conn, scale=0.01)
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
