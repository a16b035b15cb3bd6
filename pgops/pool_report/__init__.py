"""`pgops pool-report`: where the connections go, who is near a limit and who is leaking.

`sample` reads (one pg_stat_activity snapshot), `analyze` decides (pure), `pgbouncer` reads a pooler's
console, `terminate` ends sessions when asked, `export` turns a report into Prometheus gauges.
"""

from __future__ import annotations

import psycopg

from pgops.config import Settings
from pgops.db import describe, redact
from pgops.errors import PgopsError
from pgops.pool_report.analyze import Report, analyze
from pgops.pool_report.pgbouncer import error_reason, read_pgbouncer
from pgops.pool_report.sample import Sample, take_sample


def open_connection(dsn: str, settings: Settings) -> psycopg.Connection:
    """A connection with pgops' application_name, lock_timeout and the pool report's short statement_timeout.

    Unlike `db.connect` it leaves idle_in_transaction_session_timeout alone (the session is in autocommit and
    never idles in a transaction), so the sample reads the value the applications' sessions get, not pgops' own.
    """
    database = settings.database
    statement_ms = int(settings.pool_report.statement_timeout.total_seconds() * 1000)
    lock_ms = int(database.lock_timeout.total_seconds() * 1000)
    kwargs = {
        "application_name": database.application_name,
        "connect_timeout": max(1, int(database.connect_timeout.total_seconds())),
        "options": f"-c statement_timeout={statement_ms} -c lock_timeout={lock_ms}",
    }
    try:
        return psycopg.connect(dsn, autocommit=True, **kwargs)
    except psycopg.ProgrammingError as exc:
        raise PgopsError(f"invalid database URL {redact(dsn)!r}: {error_reason(exc)}") from None
    except psycopg.OperationalError as exc:
        raise PgopsError(f"can't connect to {describe(dsn)}: {error_reason(exc)}") from None


def report(conn: psycopg.Connection, settings: Settings, pgbouncer_url: str | None = None) -> tuple[Sample, Report]:
    """Sample the server (and PgBouncer's console when given a URL), then analyze."""
    sample = take_sample(conn)
    url = pgbouncer_url or settings.pool_report.pgbouncer_url
    pools = read_pgbouncer(url, settings.database.connect_timeout) if url else None
    return sample, analyze(sample, settings.pool_report, pools)
