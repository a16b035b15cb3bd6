"""`pgops workload`: the statements that cost the most, and the N+1 suspects among them.

`read` takes one pg_stat_statements snapshot of the current database, `decide` judges it (pure), and
`pgops/cli/workload.py` renders it.
"""

from __future__ import annotations

import psycopg

from pgops.config import Settings
from pgops.db import ConnectOptions, connect
from pgops.workload.decide import WorkloadReport, decide
from pgops.workload.read import take_snapshot


def open_connection(dsn: str, settings: Settings) -> psycopg.Connection:
    """A connection with pgops' session settings and the report's own statement_timeout."""
    return connect(dsn, settings.database, ConnectOptions(statement_timeout=settings.workload.statement_timeout))


def report(conn: psycopg.Connection, settings: Settings) -> WorkloadReport:
    return decide(take_snapshot(conn), settings.workload)
