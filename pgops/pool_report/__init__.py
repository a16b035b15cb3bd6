"""`pgops pool-report`: where the connections go, who is near a limit and who is leaking.

`sample` reads (one pg_stat_activity snapshot); `limits`, `leaks` and `growth` decide (pure) and `analyze` puts
the report together; `pgbouncer` reads a pooler's console, `terminate` ends sessions when asked, `export` turns
a report into Prometheus gauges.
"""

from __future__ import annotations

import psycopg

from pgops.config import Settings
from pgops.db import connect
from pgops.pool_report.analyze import Report, analyze
from pgops.pool_report.pgbouncer import read_pgbouncer
from pgops.pool_report.sample import Sample, take_sample


def open_connection(dsn: str, settings: Settings) -> psycopg.Connection:
    """A connection with pgops' session settings and the pool report's short statement_timeout.

    It leaves idle_in_transaction_session_timeout to the server (the session is in autocommit and never idles in
    a transaction), so the sample reads the value the applications' sessions get, not pgops' own.
    """
    return connect(
        dsn,
        settings.database,
        statement_timeout=settings.pool_report.statement_timeout,
        idle_in_transaction_session_timeout=None,
    )


def report(conn: psycopg.Connection, settings: Settings, pgbouncer_url: str | None = None) -> tuple[Sample, Report]:
    """Sample the server (and PgBouncer's console when given a URL), then analyze."""
    sample = take_sample(conn)
    url = pgbouncer_url or settings.pool_report.pgbouncer_url
    pools = read_pgbouncer(url, settings.database.connect_timeout) if url else None
    return sample, analyze(sample, settings.pool_report, pools)
