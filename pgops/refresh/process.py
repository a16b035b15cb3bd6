"""Process due refreshes: each view through the procedure pg_cron's `pgops.process_due()` calls too
(`pgops.process_view`), so the attempts, debounce, max-wait, back-off, locking and the no-lost-refresh rule live
once, in SQL; Python picks the views, applies the statement timeout, logs and counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import psycopg

from pgops import metrics
from pgops.config import RefreshSettings
from pgops.errors import PgopsError
from pgops.refresh import names
from pgops.refresh.queue import WatchedView, require_processor, watched_views

log = logging.getLogger("pgops.refresh")

REFRESHED, FAILED, BUSY, FLIPPED = "refreshed", "failed", "busy", "flipped"


@dataclass(frozen=True)
class RefreshOutcome:
    view_id: int
    view: str
    outcome: str  # refreshed, failed, waiting (debounce/back-off), busy (another refresh or open writers), clean,
    # unknown (not watched), flipped (only lowered the pending flag, three times running)
    concurrent: bool | None = None
    duration: timedelta | None = None
    error: str | None = None


def _ms(value: timedelta) -> str:
    return f"{int(value.total_seconds() * 1000)}ms"


@dataclass(frozen=True)
class Request:
    """`force`: refresh whatever the debounce; `plain`: a plain refresh even for a view refreshed concurrently."""

    force: bool = False
    plain: bool = False


def refresh_one(
    conn: psycopg.Connection, view_id: int, view: str, settings: RefreshSettings, request: Request = Request()
) -> RefreshOutcome:
    """One view through `pgops.process_view()`, the procedure pg_cron's `process_due()` calls too (its attempts,
    each a READ COMMITTED transaction under pgops' lock_timeout). The CALL is a top-level statement of its own
    under pgops' refresh statement_timeout: PostgreSQL arms that limit only when a top-level statement starts.
    `conn` must not be inside a transaction; it is switched to autocommit for the CALL, whose COMMITs need it."""
    autocommit = conn.autocommit
    try:
        conn.autocommit = True
        saved = conn.execute(
            "SELECT current_setting('statement_timeout'), set_config('statement_timeout', %s, false)",
            (_ms(settings.statement_timeout),),
        ).fetchone()[0]
        try:
            row = conn.execute(
                "CALL pgops.process_view(%s, %s, %s, %s)",
                (view_id, settings.lock_timeout, request.force, request.plain),
            ).fetchone()
        finally:
            if not conn.closed:
                conn.execute("SELECT set_config('statement_timeout', %s, false)", (saved,))
    except psycopg.errors.Error as exc:
        if exc.sqlstate is None or conn.closed:  # the connection broke: nothing else can be done on it
            raise
        # the bookkeeping itself failed (e.g. a lock timeout on the queue): nothing was recorded, retry next time
        return _observe(RefreshOutcome(view_id, view, FAILED, error=exc.diag.message_primary or str(exc)))
    finally:
        if not conn.closed and conn.autocommit != autocommit:
            conn.autocommit = autocommit
    return _observe(RefreshOutcome(view_id, view, *row))


def _observe(outcome: RefreshOutcome) -> RefreshOutcome:
    if outcome.outcome == REFRESHED:
        metrics.REFRESHES.labels(outcome.view, "success").inc()
        metrics.REFRESH_DURATION.labels(outcome.view).observe(outcome.duration.total_seconds())
        metrics.REFRESH_LAST_SUCCESS.labels(outcome.view).set(time.time())
        log.info("refreshed %s in %.3fs", outcome.view, outcome.duration.total_seconds(), extra={"view": outcome.view})
    elif outcome.outcome == FAILED:
        metrics.REFRESHES.labels(outcome.view, "failure").inc()
        log.warning("refresh of %s failed: %s", outcome.view, outcome.error, extra={"view": outcome.view})
    return outcome


def update_view_metrics(views: list[WatchedView]) -> None:
    """Create every watched view's series (so they exist before the first event) and set the gauges."""
    for view in views:
        metrics.REFRESHES.labels(view.name, "success")
        metrics.REFRESHES.labels(view.name, "failure")
        metrics.REFRESH_DURATION.labels(view.name)
        stale = view.stale_for
        metrics.REFRESH_STALE_SECONDS.labels(view.name).set(stale.total_seconds() if stale else 0)
        if view.last_refresh_finished_at and view.failure_count == 0:
            metrics.REFRESH_LAST_SUCCESS.labels(view.name).set(view.last_refresh_finished_at.timestamp())
        else:
            metrics.REFRESH_LAST_SUCCESS.labels(view.name)


def _candidates(conn: psycopg.Connection) -> list[tuple[int, str]]:
    return conn.execute(
        "SELECT v.view_id, v.schema_name || '.' || v.view_name "
        "FROM pgops.refresh_candidates() WITH ORDINALITY AS c(view_id, position) "
        "JOIN pgops.refresh_views v USING (view_id) ORDER BY c.position"
    ).fetchall()


def process_due(
    conn: psycopg.Connection,
    settings: RefreshSettings,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[RefreshOutcome]:
    """Refresh every due view, each in its own transaction, views read by others first; stop between views when
    `should_stop()` says so. `conn` must not be inside a transaction."""
    require_processor(conn)
    outcomes = []
    for view_id, view in _candidates(conn):
        if should_stop():
            break
        outcomes.append(refresh_one(conn, view_id, view, settings))
    update_view_metrics(watched_views(conn))
    return outcomes


def refresh_now(
    conn: psycopg.Connection, view: str | names.ViewName, settings: RefreshSettings, *, plain: bool = False
) -> RefreshOutcome:
    """Refresh a watched view at once, whatever its debounce; waits up to lock_timeout for a running refresh.
    `plain`: a plain refresh even for a view refreshed concurrently, to measure which costs less."""
    name = names.parse_view_name(view)
    require_processor(conn)
    relation = names.require(conn, name)
    row = conn.execute(
        "SELECT view_id, schema_name || '.' || view_name FROM pgops.refresh_views "
        "WHERE schema_name = %s AND view_name = %s",
        (relation.schema, relation.name),
    ).fetchone()
    if row is None:
        raise PgopsError(f"{relation} is not a watched materialized view: `pgops refresh watch {relation}` first")
    deadline = time.monotonic() + settings.lock_timeout.total_seconds()
    while True:
        outcome = refresh_one(conn, row[0], row[1], settings, Request(force=True, plain=plain))
        if outcome.outcome != BUSY or time.monotonic() >= deadline:
            return outcome
        time.sleep(0.1)
