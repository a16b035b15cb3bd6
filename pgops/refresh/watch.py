"""Register materialized views for refresh: `pgops.watch()` in SQL finds the base tables (through views and
other materialized views) and installs the statement triggers; this module calls it with pgops' limits and turns
the database's refusals into one-line messages."""

from __future__ import annotations

import psycopg
from psycopg import errors as pgerrors

from pgops.config import RefreshSettings
from pgops.errors import PgopsError
from pgops.refresh import names
from pgops.refresh.queue import WatchedView, require_installed, watched_views

# Refusals whose message already says what to do (raised by pgops.watch, or by PostgreSQL about the view).
_USER_ERRORS = (
    pgerrors.UndefinedTable,
    pgerrors.InvalidSchemaName,
    pgerrors.WrongObjectType,
    pgerrors.InsufficientPrivilege,
    pgerrors.ObjectNotInPrerequisiteState,
    pgerrors.LockNotAvailable,
    pgerrors.InvalidParameterValue,
    pgerrors.CheckViolation,
    pgerrors.InvalidName,
)


def _limits(conn: psycopg.Connection, settings: RefreshSettings) -> None:
    """Triggers are DDL on the application's tables: never wait on their locks longer than lock_timeout."""
    conn.execute(
        "SELECT set_config('lock_timeout', %s, true)", (f"{int(settings.lock_timeout.total_seconds() * 1000)}ms",)
    )


def watch(
    conn: psycopg.Connection,
    view: str | names.ViewName,
    settings: RefreshSettings,
    *,
    concurrently: bool = True,
) -> WatchedView:
    """Watch `view` (or change its settings) with the debounce and max wait of `settings` (the [refresh]
    settings, with a caller's overrides applied by `dataclasses.replace`)."""
    debounce, max_wait = settings.debounce, settings.max_wait
    if max_wait < debounce:
        raise PgopsError(f"max-wait ({max_wait}) must be at least the debounce ({debounce})")
    name = names.parse_view_name(view)
    require_installed(conn)
    relation = names.require(conn, name)
    try:
        with conn.transaction():
            _limits(conn, settings)
            view_id = conn.execute(
                "SELECT pgops.watch(%s::oid::regclass, %s, %s, %s)", (relation.oid, debounce, max_wait, concurrently)
            ).fetchone()[0]
    except _USER_ERRORS as exc:
        raise PgopsError(f"can't watch {relation}: {exc.diag.message_primary}") from None
    return next(v for v in watched_views(conn) if v.view_id == view_id)


def unwatch(conn: psycopg.Connection, view: str | names.ViewName, settings: RefreshSettings) -> bool:
    """Stop watching `view` and remove its triggers; False when it was not watched."""
    name = names.parse_view_name(view)  # text, not an oid: a view that was dropped can still be unwatched
    require_installed(conn)
    try:
        with conn.transaction():
            _limits(conn, settings)
            return conn.execute("SELECT pgops.unwatch(%s)", (name.quoted,)).fetchone()[0]
    except _USER_ERRORS as exc:
        raise PgopsError(f"can't unwatch {name}: {exc.diag.message_primary}") from None
