"""How batches walk a relation (`pgops/cleanup/walk.py`): index or heap order, rows others hold skipped,
heap batches that write each row once or are redone two-pass."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta

import psycopg
import pytest

from pgops.cleanup.runner import BatchResult, RunOptions, run_policy
from pgops.cleanup.walk import choose_walk
from pgops.config import CleanupSettings, Settings
from tests.cleanup.helpers import POLICY, WALKS, counts, make_items, metric, wal_bytes


def test_choose_walk():
    assert choose_walk(indexed=True, matching=50, total=10_000, tid_range_scan=True) == "index"
    assert choose_walk(indexed=True, matching=5_000, total=10_000, tid_range_scan=True) == "heap"
    assert choose_walk(indexed=False, matching=0, total=10_000, tid_range_scan=True) == "heap"
    assert choose_walk(indexed=True, matching=0, total=0, tid_range_scan=True) == "index"  # never analyzed
    assert choose_walk(indexed=False, matching=0, total=10_000, tid_range_scan=False) == "index"


@WALKS
def test_only_rows_expired_at_deletion_time_go(dsn, conn, walk, expired, live):
    make_items(conn, expired=expired, live=live)
    # The newest expired rows go last (index order); a batch in between makes some of them live again, and
    # another session holds one of them mid-update (uncommitted) until the run is over.
    revived = [r[0] for r in conn.execute("SELECT id FROM items WHERE note = 'old' ORDER BY id DESC LIMIT 20")]
    held = revived.pop()
    other = psycopg.connect(dsn)
    other.execute("UPDATE items SET expires_at = now() + interval '1 day', note = 'held' WHERE id = %s", (held,))

    def revive(batch: BatchResult) -> None:
        if batch.number == 1:
            conn.execute("UPDATE items SET expires_at = now() + interval '1 day' WHERE id = ANY(%s)", (revived,))

    before = metric("pgops_cleanup_rows_deleted_total", policy="items")
    result = run_policy(dsn, "items", POLICY, Settings(), RunOptions(on_batch=revive))
    other.commit()
    other.close()

    assert result.status == "done" and result.walks == {"public.items": walk}
    assert result.batches > 2  # several short transactions, not one
    assert result.rows_deleted == expired - 20
    remaining = {r[0] for r in conn.execute("SELECT id FROM items WHERE note <> 'live'")}
    assert remaining == {*revived, held}
    assert counts(conn) == (0, live)
    assert metric("pgops_cleanup_rows_deleted_total", policy="items") - before == expired - 20
    assert metric("pgops_cleanup_rows_left", policy="items") == 1  # the held row: still expired when counted
    assert 0 <= metric("pgops_cleanup_seconds_since_last_success", policy="items") < 60


@pytest.mark.timing
@WALKS
def test_rows_locked_by_others_are_skipped_not_waited_on(dsn, conn, walk, expired, live):
    make_items(conn, expired=expired, live=live)
    holder = psycopg.connect(dsn)
    held = holder.execute("SELECT id FROM items WHERE note = 'old' ORDER BY expires_at LIMIT 30 FOR UPDATE").fetchall()
    # Were the run to wait on those rows, it would sit out the whole lock_timeout and then fail.
    settings = Settings(cleanup=CleanupSettings(lock_timeout=timedelta(seconds=20)))
    started = time.monotonic()
    try:
        result = run_policy(dsn, "items", POLICY, settings)
    finally:
        elapsed = time.monotonic() - started
        holder.rollback()
        holder.close()
    assert elapsed < settings.cleanup.lock_timeout.total_seconds()
    assert result.status == "done" and result.walks == {"public.items": walk}
    assert result.rows_deleted == expired - 30
    assert result.rows_left == 30
    assert {r[0] for r in conn.execute("SELECT id FROM items WHERE note = 'old'")} == {r[0] for r in held}


def test_few_matching_rows_walk_the_index_many_walk_the_heap(dsn, conn):
    make_items(conn, expired=100, live=3000)  # about 3% match: batches in index order
    batches: list[BatchResult] = []
    result = run_policy(dsn, "items", POLICY, Settings(), RunOptions(on_batch=batches.append))
    assert result.walks == {"public.items": "index"}
    assert {b.walk for b in batches} == {"index"} and len(batches) >= 2
    assert counts(conn) == (0, 3000)
    conn.execute("UPDATE items SET expires_at = now() - interval '1 day' WHERE id % 4 = 0")  # 25% match now
    conn.execute("ANALYZE items")
    result = run_policy(dsn, "items", POLICY, Settings(), RunOptions(on_batch=batches.append))
    assert result.walks == {"public.items": "heap"}
    assert (result.rows_deleted, counts(conn)) == (750, (0, 2250))


def test_heap_walk_writes_each_deleted_row_once(dsn, conn):
    """Locking every row before deleting it writes the row twice (twice the WAL of a plain DELETE); the heap
    walk's single-pass DELETE writes it once, and still takes the rows that were locked once and let go."""
    make_items(conn, expired=20_000, live=2_000)
    conn.execute("CREATE TABLE twin AS SELECT * FROM items")
    conn.execute("VACUUM items, twin")
    # rows a finished transaction locked (FK checks do this): their xmax stays set until the row is frozen
    with conn.transaction():
        conn.execute("SELECT 1 FROM items WHERE note = 'old' AND id % 100 = 0 FOR SHARE")
    plain = wal_bytes(conn, "DELETE FROM twin WHERE expires_at < now()")
    results = []
    policy = dataclasses.replace(POLICY, batch_size=5000)
    pgops = wal_bytes(conn, lambda: results.append(run_policy(dsn, "items", policy, Settings())))
    result = results[0]
    assert (result.status, result.walks, result.rows_deleted) == ("done", {"public.items": "heap"}, 20_000)
    assert counts(conn) == (0, 2_000)
    assert pgops < 1.4 * plain, f"pgops wrote {pgops} bytes of WAL, a plain DELETE {plain}"


def test_heap_batch_that_meets_a_lock_is_redone_two_pass(dsn, conn):
    """A lock the single-pass DELETE would wait on (here the table's, in a row's case the race between reading
    and deleting it) ends it after FRESH_DELETE_LOCK_TIMEOUT; the batch is redone with SKIP LOCKED, nothing lost."""
    make_items(conn, expired=3000, live=100)
    holder = psycopg.connect(dsn)
    holder.execute("LOCK TABLE items IN SHARE MODE")  # DELETE waits on it, SELECT ... FOR UPDATE does not
    release = threading.Timer(0.5, holder.rollback)
    batches: list[BatchResult] = []
    release.start()
    try:
        result = run_policy(dsn, "items", POLICY, Settings(), RunOptions(on_batch=batches.append))
    finally:
        release.join()
        holder.close()
    assert (result.status, result.rows_deleted, counts(conn)) == ("done", 3000, (0, 100))
    assert batches[0].redone and result.redone_batches >= 1
    assert not batches[-1].redone  # once the lock is gone, batches take the single pass again
