"""`pgops pool-report`: where the connections go, who is near a limit and who is leaking.

`sample` reads (one pg_stat_activity snapshot); `limits`, `leaks` and `growth` decide (pure) and `analyze` puts
the report together; `pgbouncer` reads a pooler's console, `terminate` ends sessions when asked, `export` turns
a report into Prometheus gauges. The job's contract (docs/design/jobs.md): `prepare(conn, settings) -> Plan`,
`run(conn, plan, progress) -> Result`; the CLI renders the result, the daemon's sampler exports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from pgops import replication
from pgops.config import Settings, Target
from pgops.db import ConnectOptions, connect
from pgops.errors import Level
from pgops.pool_report.analyze import Report, StandbyUsage, analyze, standby_usage
from pgops.pool_report.pgbouncer import read_pgbouncer
from pgops.pool_report.sample import Sample, take_sample
from pgops.progress import QUIET, Progress
from pgops.resources import read_sql


def open_connection(dsn: str, settings: Settings) -> psycopg.Connection:
    """A connection with pgops' session settings and the pool report's short statement_timeout.

    It leaves idle_in_transaction_session_timeout to the server (the session is in autocommit and never idles in
    a transaction), so the sample reads the value the applications' sessions get, not pgops' own.
    """
    options = ConnectOptions(
        statement_timeout=settings.pool_report.statement_timeout, idle_in_transaction_session_timeout=None
    )
    return connect(dsn, settings.database, options)


@dataclass(frozen=True)
class Plan:
    """What one sample reads: PgBouncer's console when there is a URL, and on a primary its standbys' usage,
    with `peers` (other targets) that are those standbys telling which session holds their xmin."""

    settings: Settings
    pgbouncer_url: str | None
    peers: tuple[Target, ...] = ()
    standbys: bool = True


@dataclass(frozen=True)
class Result:
    sample: Sample
    report: Report

    @property
    def outcome(self) -> Level:
        return self.report.outcome


def prepare(conn: psycopg.Connection, settings: Settings) -> Plan:
    return Plan(settings, settings.pool_report.pgbouncer_url)


def run(conn: psycopg.Connection, plan: Plan, progress: Progress = QUIET) -> Result:
    """Sample the server (and PgBouncer's console), then analyze; one snapshot, nothing to report progress of."""
    settings = plan.settings
    sample = take_sample(conn)
    pools = read_pgbouncer(plan.pgbouncer_url, settings.database.connect_timeout) if plan.pgbouncer_url else None
    standbys = _standbys(conn, settings, plan.peers) if plan.standbys else []
    return Result(sample, analyze(sample, settings.pool_report, pools, standbys))


def _standbys(conn: psycopg.Connection, settings: Settings, peers: Sequence[Target]) -> list[StandbyUsage]:
    cur = conn.cursor(row_factory=dict_row)
    if cur.execute(read_sql("replication/role.sql")).fetchone()["pg_is_in_recovery"]:
        return []  # a standby: pg_current_wal_lsn() can't be read there (its cascaded standbys are not reported)
    rows = cur.execute(read_sql("status/standbys.sql")).fetchall()
    held: dict[int, str] = {}
    if peers and any(row["feedback_xmin"] is not None for row in rows):
        near = replication.holders_of(conn, peers, settings)
        for row in rows:
            holder = replication.holder_of(row["application_name"], row["feedback_xmin"], near)
            if holder is not None:
                held[row["pid"]] = holder.describe()
    return standby_usage(rows, held, settings.pool_report)
