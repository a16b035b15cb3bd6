"""The throttled batch loop (`pgops/cleanup/loop.py`): batch sizing, limits, stop requests, health pauses."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from pgops.cleanup.loop import MIN_BATCH_SIZE, next_batch_size
from pgops.cleanup.runner import BatchResult, RunOptions, run_policy
from pgops.config import CleanupSettings, Settings
from tests.cleanup.helpers import POLICY, counts, make_items, metric


def test_batch_size_steers_toward_target_duration():
    assert next_batch_size(1000, seconds=0.4, target=0.2) == 500  # too slow: smaller
    assert next_batch_size(1000, seconds=0.15, target=0.2) == 1333  # a bit fast: a bit bigger
    assert next_batch_size(1000, seconds=0.001, target=0.2) == 2000  # at most doubles per step
    assert next_batch_size(1000, seconds=60, target=0.2) == 500  # at most halves per step
    assert next_batch_size(15, seconds=1, target=0.2) == MIN_BATCH_SIZE
    assert next_batch_size(60_000, seconds=0.01, target=0.2, largest=100_000) == 100_000


def test_run_stops_at_max_rows_and_max_runtime(dsn, conn):
    make_items(conn, expired=5000, live=10)
    result = run_policy(dsn, "items", dataclasses.replace(POLICY, max_rows=120), Settings())
    assert (result.status, result.rows_deleted) == ("limit", 120)
    assert counts(conn) == (4880, 10)
    slow = dataclasses.replace(POLICY, batch_size=10, pause=timedelta(seconds=0.3), max_runtime=timedelta(seconds=1))
    result = run_policy(dsn, "items", slow, Settings())
    assert result.status == "limit" and "max_runtime" in result.reason
    assert 0 < result.rows_deleted < 4880
    assert result.seconds < 1 + 0.5  # the pause before the deadline is cut short


def test_stop_request_between_batches(dsn, conn):
    make_items(conn, expired=3000, live=0)
    batches: list[BatchResult] = []
    result = run_policy(
        dsn, "items", POLICY, Settings(), RunOptions(should_stop=lambda: len(batches) >= 2, on_batch=batches.append)
    )
    assert result.status == "stopped"
    assert result.rows_deleted == sum(b.deleted for b in batches) and len(batches) == 2
    assert counts(conn)[0] == 3000 - result.rows_deleted


def test_unhealthy_database_pauses_with_reason(dsn, conn):
    make_items(conn, expired=100, live=0)
    # Any lock waiter is too many: the database never looks healthy, so the run only pauses.
    settings = Settings(cleanup=CleanupSettings(max_lock_waiters=-1, throttle_pause=timedelta(seconds=0.2)))
    before = metric("pgops_cleanup_throttled_total", policy="items", reason="lock_waiters")
    policy = dataclasses.replace(POLICY, max_runtime=timedelta(seconds=1))
    result = run_policy(dsn, "items", policy, settings)
    assert result.status == "limit" and result.rows_deleted == 0
    assert result.throttled["lock_waiters"] >= 2
    assert result.throttled_seconds > 0.5
    assert metric("pgops_cleanup_throttled_total", policy="items", reason="lock_waiters") - before >= 2
