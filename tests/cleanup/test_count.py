"""What matches a policy (`pgops/cleanup/count.py`): rows left after a run, partitions expired whole."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import psycopg

from pgops.cleanup.policy import (
    inspect,
)
from pgops.cleanup.runner import RunOptions, run_policy
from pgops.config import CleanupPolicy, Settings
from tests.cleanup.helpers import POLICY, make_items


def test_rows_left_without_an_index_comes_from_the_estimate_before_the_run(dsn, conn):
    make_items(conn, expired=2000, live=100, index=False)
    conn.execute("INSERT INTO items (expires_at, note) VALUES (now() - interval '1 hour', 'held')")
    holder = psycopg.connect(dsn)
    holder.execute("SELECT 1 FROM items WHERE note = 'held' FOR UPDATE")
    try:
        result = run_policy(dsn, "items", POLICY, Settings())
    finally:
        holder.rollback()
        holder.close()
    assert (result.rows_deleted, result.warnings[0].split(":")[0]) == (2000, "no index on public.items (expires_at)")
    assert result.rows_left is not None and result.rows_left <= 20  # planner estimate (~2000) less 2000 deleted


def test_partitioned_table_cleans_each_partition_and_offers_to_drop_expired_ones(dsn, conn):
    conn.execute(
        "CREATE TABLE logs (id bigint, created_at timestamptz NOT NULL, path text) PARTITION BY RANGE (created_at)"
    )
    conn.execute("CREATE TABLE logs_old PARTITION OF logs FOR VALUES FROM ('2000-01-01') TO ('2001-01-01')")
    conn.execute("CREATE TABLE logs_now PARTITION OF logs FOR VALUES FROM ('2001-01-01') TO (MAXVALUE)")
    conn.execute("CREATE INDEX ON logs (created_at)")
    conn.execute(
        "INSERT INTO logs SELECT g, '2000-06-01'::timestamptz + g * interval '1 min', '/a' "
        "FROM generate_series(1, 300) g"
    )
    conn.execute(
        "INSERT INTO logs SELECT g, now() - g * interval '1 day' + interval '12 hours', '/b' "
        "FROM generate_series(1, 60) g"
    )
    conn.execute("ANALYZE logs")
    policy = CleanupPolicy(
        table="public.logs", older_than_column="created_at", older_than=timedelta(days=30), batch_size=40
    )
    checked = inspect(conn, "logs", policy)
    assert [leaf.relation.qualified for leaf in checked.table.leaves] == ["public.logs_now", "public.logs_old"]

    dry = run_policy(dsn, "logs", policy, Settings(), RunOptions(dry_run=True))
    assert (dry.would_delete, dry.counted) == (300 + 30, True)
    assert dry.expired_partitions == [
        'ALTER TABLE "public"."logs" DETACH PARTITION "public"."logs_old" CONCURRENTLY; DROP TABLE "public"."logs_old";'
    ]
    assert "LockRows" in dry.plan and "Delete on logs_now" in dry.plan
    assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 360

    # a row the policy's `where` leaves NULL is kept by every batch: its partition is not one to drop whole
    conn.execute("UPDATE logs SET path = NULL WHERE id = 1 AND created_at < '2001-01-01'")
    keeps_nulls = dataclasses.replace(policy, where="path <> '/x'")
    assert run_policy(dsn, "logs", keeps_nulls, Settings(), RunOptions(dry_run=True)).expired_partitions == []
    conn.execute("UPDATE logs SET path = '/a' WHERE path IS NULL")

    tables: set[str] = set()
    result = run_policy(dsn, "logs", policy, Settings(), RunOptions(on_batch=lambda b: tables.add(b.table)))
    assert tables == {"public.logs_old", "public.logs_now"}
    assert result.rows_deleted == 330
    left = conn.execute("SELECT min(created_at) > now() - interval '30 days', count(*) FROM logs").fetchone()
    assert left == (True, 30)
