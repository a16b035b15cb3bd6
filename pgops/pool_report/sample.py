"""Catalog reads for the pool report: one pg_stat_activity snapshot plus the limits that apply.

Nothing here decides anything: `take_sample` returns plain dataclasses that `analyze` judges, so the
decisions can be tested on hand-made samples and the daemon can keep successive samples cheaply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from pgops.resources import read_sql

HIDDEN_QUERY = "<insufficient privilege>"


@dataclass(frozen=True)
class Backend:
    """One client session as pg_stat_activity showed it; `hidden` when pgops' role may not see its details."""

    pid: int
    database: str | None
    user: str | None
    application: str
    client: str | None  # None: a Unix socket (or hidden)
    backend_start: datetime | None
    xact_start: datetime | None
    query_start: datetime | None
    state_change: datetime | None
    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    xmin_age: int | None
    query: str | None
    hidden: bool = False
    blocked_by: tuple[int, ...] = ()


@dataclass(frozen=True)
class ServerInfo:
    """Server-wide limits and timeouts, and the role pgops runs as."""

    server_version_num: int
    max_connections: int
    superuser_reserved_connections: int
    reserved_connections: int
    idle_in_transaction_session_timeout_ms: int | None  # None: pgops' own session set it, so unknown
    idle_session_timeout_ms: int | None
    own_pid: int
    current_user: str
    superuser: bool
    reads_all_stats: bool
    signals_backends: bool
    local_cores: int | None  # this machine's cores when the server runs on it, else None


@dataclass(frozen=True)
class Sample:
    sampled_at: datetime
    server: ServerInfo
    backends: list[Backend]
    database_limits: dict[str, int] = field(default_factory=dict)  # only databases with a limit
    role_limits: dict[str, int] = field(default_factory=dict)  # only roles with a limit
    superusers: frozenset[str] = frozenset()


def _backend(row: dict) -> Backend:
    return Backend(
        pid=row["pid"],
        database=row["datname"],
        user=row["usename"],
        application=row["application_name"] or "",
        client=row["client_addr"],
        backend_start=row["backend_start"],
        xact_start=row["xact_start"],
        query_start=row["query_start"],
        state_change=row["state_change"],
        state=row["state"],
        wait_event_type=row["wait_event_type"],
        wait_event=row["wait_event"],
        xmin_age=row["xmin_age"],
        query=row["query"],
        hidden=row["hidden"],
        blocked_by=tuple(row["blocked_by"] or ()),
    )


def take_sample(conn: psycopg.Connection) -> Sample:
    """Read limits, then ONE pg_stat_activity snapshot; `conn` should come from `db.connect` (timeouts set)."""
    with conn.cursor(row_factory=dict_row) as cur:
        server_row = cur.execute(read_sql("pool_report/server.sql")).fetchone()
        assert server_row is not None
        limit_rows = cur.execute(read_sql("pool_report/limits.sql")).fetchall()
        backends = [_backend(row) for row in cur.execute(read_sql("pool_report/activity.sql"))]
    sampled_at = server_row.pop("sampled_at")
    server_is_local = server_row.pop("server_is_local")
    server = ServerInfo(**server_row, local_cores=os.cpu_count() if server_is_local else None)
    return Sample(
        sampled_at=sampled_at,
        server=server,
        backends=backends,
        database_limits={r["name"]: r["connection_limit"] for r in limit_rows if r["kind"] == "database"},
        role_limits={
            r["name"]: r["connection_limit"] for r in limit_rows if r["kind"] == "role" and r["connection_limit"] >= 0
        },
        superusers=frozenset(r["name"] for r in limit_rows if r["kind"] == "role" and r["superuser"]),
    )
