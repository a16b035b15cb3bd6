"""The throttled batch loop: delete expired rows in short transactions that never wait on rows the application
holds, steering the batch size toward its target duration and pausing while the database is unhealthy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import errors as pgerrors

from pgops import metrics
from pgops.cleanup.health import sample_health, throttle_reason
from pgops.cleanup.policy import Checked, LeafInfo
from pgops.cleanup.result import BatchResult, CleanupResult, Status
from pgops.cleanup.walk import MAX_BATCH_SIZE, start_walk
from pgops.config import CleanupSettings
from pgops.errors import PgopsError, first_line

log = logging.getLogger(__name__)

MIN_BATCH_SIZE = 10
HEALTH_INTERVAL = 1.0  # seconds a healthy sample stands for, so short batches do not each pay for one
MAX_CONSECUTIVE_FAILURES = 5  # batches in a row that hit lock_timeout/statement_timeout before the run gives up
# What a batch may meet and be retried after, smaller; anything else from the server ends the run.
_RETRIED = (pgerrors.LockNotAvailable, pgerrors.QueryCanceled, pgerrors.DeadlockDetected, pgerrors.SerializationFailure)


def next_batch_size(size: int, seconds: float, target: float, *, largest: int = MAX_BATCH_SIZE) -> int:
    """Steer the batch size toward `target` seconds per batch, changing by at most a factor 2 per step so one
    slow or fast batch does not swing it."""
    if seconds <= 0:
        return size
    ratio = min(2.0, max(0.5, target / seconds))
    return max(MIN_BATCH_SIZE, min(largest, int(size * ratio)))


def sleep(seconds: float, should_stop: Callable[[], bool]) -> None:
    """Sleep in short steps so a stop request is seen within 0.1 s."""
    end = time.monotonic() + seconds
    while not should_stop() and (left := end - time.monotonic()) > 0:
        time.sleep(min(0.1, left))


@dataclass
class BatchLoop:
    """One policy's run through its relations, filling in `result` as it goes."""

    conn: psycopg.Connection
    checked: Checked
    settings: CleanupSettings
    result: CleanupResult
    deadline: float  # time.monotonic() at which max_runtime is reached
    should_stop: Callable[[], bool]
    on_batch: Callable[[BatchResult], None] | None = None

    def wait_until_healthy(self, leaf: LeafInfo) -> bool:
        """True when the next batch may run; otherwise pause once (logged, counted by reason) and return False."""
        result, settings = self.result, self.settings
        throttle = throttle_reason(sample_health(self.conn, leaf.relation.oid), settings)
        if throttle is None:
            return True
        pause = max(0.0, min(settings.throttle_pause.total_seconds(), self.deadline - time.monotonic()))
        log.warning(
            "cleanup %s paused %.1fs: %s",
            result.policy,
            pause,
            throttle.reason,
            extra={"policy": result.policy, "throttle": throttle.kind},
        )
        metrics.CLEANUP_THROTTLED.labels(result.policy, throttle.kind).inc()
        result.throttled[throttle.kind] = result.throttled.get(throttle.kind, 0) + 1
        started = time.monotonic()
        sleep(pause, self.should_stop)
        waited = time.monotonic() - started
        result.throttled_seconds += waited
        metrics.CLEANUP_THROTTLED_SECONDS.labels(result.policy).inc(waited)
        return False

    def _limit_reached(self) -> bool:
        """Set the result's status and reason when the run must end before its next batch."""
        policy, result = self.checked.policy, self.result
        if self.should_stop():
            result.status, result.reason = Status.STOPPED, "asked to stop"
        elif time.monotonic() >= self.deadline:
            result.status, result.reason = Status.LIMIT, f"max_runtime {policy.max_runtime} reached"
        elif policy.max_rows is not None and result.rows_deleted >= policy.max_rows:
            result.status, result.reason = Status.LIMIT, f"max_rows {policy.max_rows} reached"
        else:
            return False
        return True

    def run(self) -> None:
        """Delete batch by batch, relation by relation, until done or a limit is reached."""
        policy, name, result, settings = self.checked.policy, self.checked.name, self.result, self.settings
        target = policy.target_batch_duration.total_seconds()
        size = max(MIN_BATCH_SIZE, min(policy.batch_size, MAX_BATCH_SIZE))
        failures = 0
        healthy_at = -HEALTH_INTERVAL
        for leaf in self.checked.table.leaves:
            walk = start_walk(self.conn, leaf, policy, settings)
            table = leaf.relation.qualified
            result.walks[table] = walk.kind
            log.info(
                "cleanup %s: deleting from %s (%s walk)",
                name,
                table,
                walk.kind,
                extra={"policy": name, "table": table, "walk": walk.kind},
            )
            while not walk.done:
                if self._limit_reached():
                    return
                if time.monotonic() - healthy_at >= HEALTH_INTERVAL:
                    if not self.wait_until_healthy(leaf):
                        continue
                    healthy_at = time.monotonic()
                remaining = None if policy.max_rows is None else policy.max_rows - result.rows_deleted
                batch_started = time.monotonic()
                try:
                    batch = walk.run_batch(self.conn, size, remaining)
                except _RETRIED as exc:
                    failures += 1
                    result.failed_batches += 1
                    if failures >= MAX_CONSECUTIVE_FAILURES:
                        raise PgopsError(
                            f"cleanup policy {name}: {failures} batches in a row failed on {table}, "
                            f"last: {first_line(exc)} (cleanup lock_timeout {settings.lock_timeout}, "
                            f"statement_timeout {settings.statement_timeout})"
                        ) from None
                    size = max(MIN_BATCH_SIZE, size // 2)
                    log.warning("cleanup %s: batch failed (%s), retrying with %d rows", name, first_line(exc), size)
                    sleep(policy.pause.total_seconds(), self.should_stop)
                    continue
                except psycopg.Error as exc:
                    raise PgopsError(f"cleanup policy {name}: batch on {table} failed: {first_line(exc)}") from None
                seconds = time.monotonic() - batch_started
                failures = 0
                result.batches += 1
                result.rows_deleted += batch.deleted
                result.redone_batches += batch.redone
                metrics.CLEANUP_BATCHES.labels(name).inc()
                metrics.CLEANUP_ROWS_DELETED.labels(name).inc(batch.deleted)
                metrics.CLEANUP_BATCH_DURATION.labels(name).observe(seconds)
                report = BatchResult(
                    name, table, result.batches, walk.kind, batch.selected, batch.deleted, seconds, batch.redone
                )
                log.debug("cleanup batch", extra={"batch": report.__dict__})
                if self.on_batch is not None:
                    self.on_batch(report)
                if walk.done:
                    break
                size = next_batch_size(size, seconds, target, largest=walk.largest())
                sleep(min(policy.pause.total_seconds(), max(0.0, self.deadline - time.monotonic())), self.should_stop)
        result.status = Status.DONE
