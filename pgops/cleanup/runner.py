"""A cleanup run from end to end: find the policy's database, check the policy, take its lock, and hand over to the
batch loop (`loop`), or count and explain for a dry run; then the run's metrics and log line.

The rooms of the job: `policy` (checks against the catalog), `statements` (composed SQL; fixed queries in
`sql/cleanup/`), `walk` (index or heap order through one relation), `count` (estimates and counts), `loop`
(the throttled batch loop), `health` (when to pause), `result` (what a run reports).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg.conninfo import make_conninfo

from pgops import metrics
from pgops.cleanup import count
from pgops.cleanup.loop import BatchLoop
from pgops.cleanup.policy import CRON_DATABASE, Checked, inspect
from pgops.cleanup.result import BatchResult as BatchResult  # re-exported: the CLI imports it from here
from pgops.cleanup.result import CleanupResult, Status
from pgops.cleanup.walk import start_walk
from pgops.config import CleanupPolicy, Settings
from pgops.db import ConnectOptions, connect, describe
from pgops.errors import PgopsError
from pgops.resources import read_sql

log = logging.getLogger(__name__)


def _never() -> bool:
    return False


@dataclass(frozen=True)
class RunOptions:
    """How to run a policy: for real or as a dry run (count what would go, show a batch's plan), when to stop
    early, and whom to tell of each batch."""

    dry_run: bool = False
    should_stop: Callable[[], bool] = _never
    on_batch: Callable[[BatchResult], None] | None = None


@dataclass(frozen=True)
class _Run:
    name: str
    policy: CleanupPolicy
    settings: Settings
    options: RunOptions
    started: float  # time.monotonic() when the run began: max_runtime counts from there


def target_dsn(dsn: str, policy: CleanupPolicy, settings: Settings) -> str | None:
    """The connection string of the database holding the policy's table; None when pg_cron is not loaded."""
    if policy.database is None:
        return dsn
    database: str | None = policy.database
    if database == CRON_DATABASE:
        with connect(dsn, settings.database) as conn:
            row = conn.execute(read_sql("cleanup/cron_database.sql")).fetchone()
        database = row[0] if row else None
        if not database:
            return None
    return make_conninfo(dsn, dbname=database)


def run_policy(
    dsn: str, name: str, policy: CleanupPolicy, settings: Settings, options: RunOptions = RunOptions()
) -> CleanupResult:
    """Validate the policy, then delete its expired rows batch by batch (or, with `dry_run`, count them and
    show the batch's plan). Only one run per policy at a time across every pgops process (advisory lock)."""
    run = _Run(name, policy, settings, options, time.monotonic())
    metrics.cleanup_series(name)
    try:
        result = _run(dsn, run)
    except PgopsError:
        metrics.CLEANUP_RUNS.labels(name, "failed").inc()
        raise
    result.seconds = time.monotonic() - run.started
    result.rows_per_second = result.rows_deleted / result.seconds if result.seconds > 0 else 0.0
    metrics.CLEANUP_RUNS.labels(name, result.status).inc()
    if result.status == Status.DONE:
        metrics.cleanup_succeeded(name)
    if result.rows_left is not None:
        metrics.CLEANUP_ROWS_LEFT.labels(name).set(result.rows_left)
    summary = (
        f"{result.would_delete} rows would go"
        if options.dry_run and result.would_delete is not None
        else f"{result.rows_deleted} rows in {result.batches} batches"
    )
    log.info(
        "cleanup %s %s: %s, %.1fs",
        name,
        result.status,
        summary,
        result.seconds,
        extra={"policy": name, "status": result.status, "rows": result.rows_deleted, "batches": result.batches},
    )
    return result


def _run(dsn: str, run: _Run) -> CleanupResult:
    name, policy, dry_run = run.name, run.policy, run.options.dry_run
    where = target_dsn(dsn, policy, run.settings)
    if where is None:
        if not policy.if_exists:
            raise PgopsError(
                f"cleanup policy {name}: pg_cron is not loaded (no cron.database_name); "
                "install postgresql-15-cron and add pg_cron to shared_preload_libraries"
            )
        return CleanupResult(name, policy.table, describe(dsn), Status.SKIPPED, "pg_cron is not installed", dry_run)
    cleanup = run.settings.cleanup
    limits = ConnectOptions(statement_timeout=cleanup.statement_timeout, lock_timeout=cleanup.lock_timeout)
    with connect(where, run.settings.database, limits) as conn:
        conn.execute(read_sql("cleanup/session.sql"))
        checked = inspect(conn, name, policy)
        if checked is None:
            return CleanupResult(name, policy.table, describe(where), Status.SKIPPED, "table does not exist", dry_run)
        status = Status.DRY_RUN if dry_run else Status.DONE
        result = CleanupResult(name, checked.table.relation.qualified, describe(where), status, None, dry_run)
        result.warnings.extend(checked.warnings)
        for warning in checked.warnings:
            log.warning("cleanup %s: %s", name, warning, extra={"policy": name})
        result.expired_partitions = count.expired_partitions(conn, checked)
        for advice in result.expired_partitions:
            log.warning("cleanup %s: a whole partition has expired: %s", name, advice, extra={"policy": name})
        if dry_run:
            _dry_run(conn, checked, run, result)
        else:
            _delete(conn, checked, run, result)
        return result


def _dry_run(conn: psycopg.Connection, checked: Checked, run: _Run, result: CleanupResult) -> None:
    result.would_delete, result.counted = count.count(conn, checked)
    leaves = checked.table.leaves
    walks = [start_walk(conn, leaf, run.policy, run.settings.cleanup) for leaf in leaves]
    result.walks = {leaf.relation.qualified: w.kind for leaf, w in zip(leaves, walks, strict=True)}
    result.plan = walks[0].explain(conn, run.policy.batch_size)


def _delete(conn: psycopg.Connection, checked: Checked, run: _Run, result: CleanupResult) -> None:
    """The batch loop under the policy's advisory lock; skipped when another run holds it."""
    key = {"key": f"pgops.cleanup:{run.name}"}
    locked = conn.execute(read_sql("cleanup/try_lock.sql"), key).fetchone()
    if not (locked and locked[0]):
        result.status, result.reason = Status.SKIPPED, "another pgops run of this policy is in progress"
        return
    try:
        matching_before = count.estimate(conn, checked.table.relation, run.policy)
        deadline = run.started + run.policy.max_runtime.total_seconds()
        options = run.options
        BatchLoop(conn, checked, run.settings.cleanup, result, deadline, options.should_stop, options.on_batch).run()
        result.rows_left = count.rows_left(conn, checked, matching_before, result.rows_deleted)
    finally:
        if not conn.closed:
            conn.execute(read_sql("cleanup/unlock.sql"), key)


def validate_all(dsn: str, policies: dict[str, CleanupPolicy], settings: Settings) -> None:
    """Check every policy against its catalog before any of them deletes a row."""
    for name, policy in policies.items():
        where = target_dsn(dsn, policy, settings)
        if where is None:
            continue  # reported by run_policy, as skipped or as an error
        with connect(where, settings.database, ConnectOptions(statement_timeout=timedelta(seconds=10))) as conn:
            inspect(conn, name, policy)
