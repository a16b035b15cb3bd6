"""Pure decisions on connection limits: used against usable slots per server, database, role and PgBouncer
pool, each with the level its thresholds give."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from pgops.config import PoolReportSettings
from pgops.errors import EXIT_CRITICAL, EXIT_OK, EXIT_WARNING, LEVELS
from pgops.pool_report.pgbouncer import PgBouncerSample
from pgops.pool_report.sample import Sample

LEVEL_NAMES = {code: str(level) for code, level in LEVELS.items()}  # levels here are exit codes, ordered


class LimitKind(StrEnum):
    """What a limit is a limit of."""

    SERVER = "server"
    DATABASE = "database"
    ROLE = "role"
    PGBOUNCER_POOL = "pgbouncer pool"


@dataclass(frozen=True)
class LimitUsage:
    """One limit: connections used against the usable slots, with the level its thresholds give."""

    kind: LimitKind
    name: str
    used: int
    limit: int
    left: int
    ratio: float
    level: int


@dataclass(frozen=True)
class PgBouncerPoolUsage:
    database: str
    user: str
    clients_active: int
    clients_waiting: int
    maxwait_seconds: float
    servers_used: int
    pool_size: int
    ratio: float
    level: int


def level_for(ratio: float, settings: PoolReportSettings) -> int:
    if ratio >= settings.critical:
        return EXIT_CRITICAL
    if ratio >= settings.warning:
        return EXIT_WARNING
    return EXIT_OK


def _usage(kind: LimitKind, name: str, used: int, limit: int, settings: PoolReportSettings) -> LimitUsage:
    ratio = used / limit if limit > 0 else (1.0 if used else 0.0)  # a zero limit is full with one session
    return LimitUsage(kind, name, used, limit, limit - used, ratio, level_for(ratio, settings))


def saturation(sample: Sample, settings: PoolReportSettings) -> list[LimitUsage]:
    """Used / usable for the server, each database with a limit and each role with a limit.

    Usable server slots are max_connections less the slots reserved for superusers (and, on 16+, for
    pg_use_reserved_connections). A database's limit counts every session in it, superusers' too (PostgreSQL
    counts them, it just never refuses a superuser); a superuser role's own limit is not enforced, so it is
    not shown.
    """
    server = sample.server
    usable = server.max_connections - server.superuser_reserved_connections - server.reserved_connections
    limits = [_usage(LimitKind.SERVER, "max_connections", len(sample.backends), usable, settings)]
    per_database = Counter(b.database for b in sample.backends)
    per_role = Counter(b.user for b in sample.backends)
    limits += [
        _usage(LimitKind.DATABASE, name, per_database[name], limit, settings)
        for name, limit in sorted(sample.database_limits.items())
    ]
    limits += [
        _usage(LimitKind.ROLE, name, per_role[name], limit, settings)
        for name, limit in sorted(sample.role_limits.items())
        if name not in sample.superusers
    ]
    return limits


def pool_size_for(cores: int) -> int:
    """PostgreSQL's wiki rule of thumb for active connections: (2 x cores) + 1 effective spindle."""
    return cores * 2 + 1


def pgbouncer_usage(pgbouncer: PgBouncerSample, settings: PoolReportSettings) -> list[PgBouncerPoolUsage]:
    """Per PgBouncer pool: waiting clients, longest wait and server connections against pool_size.

    A pool with waiting clients is at least a warning: clients queue for a server connection.
    """
    sizes = {d.name: d.pool_size for d in pgbouncer.databases}
    usage = []
    for pool in pgbouncer.pools:
        size = sizes.get(pool.database, 0)
        ratio = pool.servers_used / size if size > 0 else 0.0
        level = level_for(ratio, settings)
        if pool.clients_waiting:
            level = max(level, EXIT_WARNING)
        usage.append(
            PgBouncerPoolUsage(
                database=pool.database,
                user=pool.user,
                clients_active=pool.clients_active,
                clients_waiting=pool.clients_waiting,
                maxwait_seconds=pool.maxwait_seconds,
                servers_used=pool.servers_used,
                pool_size=size,
                ratio=ratio,
                level=level,
            )
        )
    return usage
