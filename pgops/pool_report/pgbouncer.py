"""Reads PgBouncer's admin console: SHOW POOLS and SHOW DATABASES.

The console speaks only the simple query protocol and has no transactions, and PgBouncer refuses startup
parameters it does not know (such as the `options` pgops sets on PostgreSQL): `db.PGBOUNCER_CONSOLE` connects
without them, in autocommit, with a client-side cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg.rows import dict_row

from pgops.config import DatabaseSettings
from pgops.db import PGBOUNCER_CONSOLE, connect, describe
from pgops.errors import ConnectError, PgopsError, first_line

ADMIN_DATABASE = "pgbouncer"  # the console's own pseudo-database, not a pool of the application
CONSOLE_HINT = "(connect to its `pgbouncer` database as one of admin_users or stats_users)"


@dataclass(frozen=True)
class PgBouncerPool:
    database: str
    user: str
    clients_active: int
    clients_waiting: int
    servers_used: int  # every server connection of the pool: active, idle, used, tested, logging in
    maxwait_seconds: float
    pool_mode: str | None


@dataclass(frozen=True)
class PgBouncerDatabase:
    name: str
    pool_size: int
    max_connections: int
    current_connections: int


@dataclass(frozen=True)
class PgBouncerSample:
    pools: list[PgBouncerPool]
    databases: list[PgBouncerDatabase]


def _pool(row: dict) -> PgBouncerPool:
    servers = sum(int(row.get(column) or 0) for column in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))
    return PgBouncerPool(
        database=row["database"],
        user=row["user"],
        clients_active=int(row.get("cl_active") or 0),
        clients_waiting=int(row.get("cl_waiting") or 0),
        servers_used=servers,
        maxwait_seconds=int(row.get("maxwait") or 0) + int(row.get("maxwait_us") or 0) / 1_000_000,
        pool_mode=row.get("pool_mode"),
    )


def _database(row: dict) -> PgBouncerDatabase:
    return PgBouncerDatabase(
        name=row["name"],
        pool_size=int(row.get("pool_size") or 0),
        max_connections=int(row.get("max_connections") or 0),
        current_connections=int(row.get("current_connections") or 0),
    )


def read_pgbouncer(url: str, connect_timeout: timedelta = timedelta(seconds=10)) -> PgBouncerSample:
    """SHOW POOLS and SHOW DATABASES from the admin console at `url` (its database is `pgbouncer`)."""
    settings = DatabaseSettings(connect_timeout=connect_timeout)
    try:
        with connect(url, settings, PGBOUNCER_CONSOLE) as conn, conn.cursor(row_factory=dict_row) as cur:
            pools = cur.execute("SHOW POOLS").fetchall()
            databases = cur.execute("SHOW DATABASES").fetchall()
    except ConnectError as exc:
        where = f"can't read PgBouncer's console at {describe(url)}"
        raise ConnectError(f"{where}: {exc.reason} {CONSOLE_HINT}", transient=exc.transient) from None
    except psycopg.Error as exc:
        raise PgopsError(
            f"can't read PgBouncer's console at {describe(url)}: {first_line(exc)} {CONSOLE_HINT}"
        ) from None
    return PgBouncerSample(
        pools=[_pool(r) for r in pools if r["database"] != ADMIN_DATABASE],
        databases=[_database(r) for r in databases if r["name"] != ADMIN_DATABASE],
    )
