"""`pgops workload`: the statements that cost the most, and the N+1 suspects among them.

`read` takes one pg_stat_statements snapshot of the current database, `decide` judges it (pure), and
`pgops/cli/workload.py` renders it. The job's contract (docs/design/jobs.md): `prepare(conn, settings) -> Plan`,
`run(conn, plan, progress) -> WorkloadReport`, whose `outcome` is a `Level`.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from pgops.config import Settings, WorkloadSettings
from pgops.db import ConnectOptions, connect
from pgops.progress import QUIET, Progress
from pgops.workload.decide import WorkloadReport, decide
from pgops.workload.read import take_snapshot


def open_connection(dsn: str, settings: Settings) -> psycopg.Connection:
    """A connection with pgops' session settings and the report's own statement_timeout."""
    return connect(dsn, settings.database, ConnectOptions(statement_timeout=settings.workload.statement_timeout))


@dataclass(frozen=True)
class Plan:
    """What a run judges the snapshot by (`[workload]`, with the CLI's --top and --show-queries applied)."""

    settings: WorkloadSettings


def prepare(conn: psycopg.Connection, settings: Settings) -> Plan:
    return Plan(settings.workload)


def run(conn: psycopg.Connection, plan: Plan, progress: Progress = QUIET) -> WorkloadReport:
    """One snapshot (a single read: nothing to report progress of), judged."""
    return decide(take_snapshot(conn), plan.settings)


def report(conn: psycopg.Connection, settings: Settings) -> WorkloadReport:
    return run(conn, prepare(conn, settings))
