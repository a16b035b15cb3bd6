"""Reads of the refresh queue (`watched_views`) and the pure judgements made on them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import class_row

from pgops.errors import EXIT_CRITICAL, EXIT_OK, EXIT_WARNING, PgopsError
from pgops.resources import read_sql


@dataclass(frozen=True)
class WatchedView:
    view_id: int
    schema_name: str
    view_name: str
    debounce: timedelta
    max_wait: timedelta
    refresh_concurrently: bool
    stale_since: datetime | None
    last_marked_at: datetime | None
    last_refresh_started_at: datetime | None
    last_refresh_finished_at: datetime | None
    last_refresh_duration: timedelta | None
    last_concurrent_duration: timedelta | None
    last_plain_duration: timedelta | None
    refresh_count: int
    failure_count: int
    next_attempt_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    base_tables: list[str]
    populated: bool | None  # None: the view no longer exists
    now: datetime  # the server's clock when read

    @property
    def name(self) -> str:
        return f"{self.schema_name}.{self.view_name}"

    @property
    def stale_for(self) -> timedelta | None:
        return self.now - self.stale_since if self.stale_since else None


NOT_INSTALLED = "pgops is not installed in this database: run `pgops migrate` (or `alembic upgrade head`)"


def require_installed(conn: psycopg.Connection) -> None:
    if conn.execute("SELECT to_regclass('pgops.refresh_views') IS NULL").fetchone()[0]:
        raise PgopsError(NOT_INSTALLED)


def require_processor(conn: psycopg.Connection) -> None:
    """The objects refreshing needs, which migration 0004 added: an older schema says what to run. One round
    trip: the daemon asks before every processing run."""
    installed, found = conn.execute(
        "SELECT to_regclass('pgops.refresh_views') IS NOT NULL, EXISTS (SELECT FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgops' AND p.proname = 'process_view')"
    ).fetchone()
    if not installed:
        raise PgopsError(NOT_INSTALLED)
    if not found:
        raise PgopsError(
            "pgops' objects in this database are older than this pgops (no pgops.process_view): run `pgops migrate`"
        )


def watched_views(conn: psycopg.Connection) -> list[WatchedView]:
    """Every watched view with its state, stale marks not yet folded included."""
    require_installed(conn)
    with conn.cursor(row_factory=class_row(WatchedView)) as cur:
        return cur.execute(read_sql("refresh/watched_views.sql")).fetchall()


def plain_is_cheaper(view: WatchedView) -> bool:
    """A concurrent refresh that took longer than the last plain one: most rows change, so plain refreshes
    (`watch --no-concurrently`) would cost less, at the price of blocking readers while they run."""
    return (
        view.refresh_concurrently
        and view.last_concurrent_duration is not None
        and view.last_plain_duration is not None
        and view.last_concurrent_duration > view.last_plain_duration
    )


def is_overdue(view: WatchedView, grace: timedelta) -> bool:
    """Stale for longer than max_wait plus `grace` (the processing interval): refreshes are not keeping up."""
    return view.stale_for is not None and view.stale_for > view.max_wait + grace


def status_exit_code(views: list[WatchedView], grace: timedelta) -> int:
    """2 when a view's last refresh failed or it no longer exists, 1 when one is overdue, else 0."""
    if any(v.failure_count > 0 or v.populated is None for v in views):
        return EXIT_CRITICAL
    if any(is_overdue(v, grace) for v in views):
        return EXIT_WARNING
    return EXIT_OK
