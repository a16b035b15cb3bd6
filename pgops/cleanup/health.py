"""Is now a good moment for another batch? Deleting adds WAL, dead tuples and lock traffic, so a cleanup waits
while replicas or the archiver fall behind, while many backends queue on locks, or while autovacuum works on
the table it deletes from."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from pgops.config import CleanupSettings


@dataclass(frozen=True)
class HealthSample:
    replication_lag: float | None  # seconds, the slowest replica's replay lag
    archiver_failing: bool  # the last archive attempt failed (WAL piles up in pg_wal)
    lock_waiters: int  # backends waiting on a heavyweight lock
    autovacuum_on_table: bool


@dataclass(frozen=True)
class Throttle:
    kind: str  # metric label: replication_lag, archiver, lock_waiters, autovacuum
    reason: str


def sample_health(conn: psycopg.Connection, table_oid: int) -> HealthSample:
    """One round trip; without pg_monitor other roles' sessions are invisible and count as healthy."""
    row = conn.execute(
        """
        SELECT (SELECT max(extract(epoch FROM replay_lag)) FROM pg_stat_replication),
               coalesce((SELECT last_failed_time > coalesce(last_archived_time, '-infinity')
                         FROM pg_stat_archiver WHERE current_setting('archive_mode') <> 'off'), false),
               (SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'),
               EXISTS (SELECT 1 FROM pg_stat_progress_vacuum v JOIN pg_stat_activity a USING (pid)
                       WHERE v.relid = %s AND a.backend_type = 'autovacuum worker')
        """,
        (table_oid,),
    ).fetchone()
    assert row is not None
    lag, archiver_failing, waiters, autovacuum = row
    return HealthSample(None if lag is None else float(lag), archiver_failing, waiters, autovacuum)


def throttle_reason(sample: HealthSample, settings: CleanupSettings) -> Throttle | None:
    """The first reason to hold the next batch back, or None when the database can take it."""
    max_lag = settings.max_replication_lag.total_seconds()
    if sample.replication_lag is not None and sample.replication_lag > max_lag:
        return Throttle("replication_lag", f"replication lag {sample.replication_lag:.1f}s > {max_lag:g}s")
    if sample.archiver_failing:
        return Throttle("archiver", "WAL archiving is failing (pg_stat_archiver), WAL piles up")
    if sample.lock_waiters > settings.max_lock_waiters:
        return Throttle("lock_waiters", f"{sample.lock_waiters} backends wait on locks > {settings.max_lock_waiters}")
    if sample.autovacuum_on_table and settings.throttle_on_autovacuum:
        return Throttle("autovacuum", "autovacuum is working on the table")
    return None
