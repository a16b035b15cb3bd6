"""One pg_stat_statements snapshot of the current database, as plain dataclasses.

Nothing here decides anything: `decide` judges a `Snapshot`, so its rules can be tested on hand-made ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgops import pg_stat_statements
from pgops.resources import read_sql

# What pg_stat_statements shows for another role's statement to a role without pg_read_all_stats.
HIDDEN_QUERY = "<insufficient privilege>"


@dataclass(frozen=True)
class StatementStats:
    """One statement as pg_stat_statements counts it (constants already `$n`), since its stats were reset."""

    queryid: int | None  # hidden from a role without pg_read_all_stats, for other roles' statements
    query: str
    calls: int
    total_time_ms: float
    rows: int
    shared_blks_hit: int
    shared_blks_read: int

    @property
    def mean_time_ms(self) -> float:
        return self.total_time_ms / self.calls if self.calls else 0.0

    @property
    def rows_per_call(self) -> float:
        return self.rows / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class Snapshot:
    database: str
    sampled_at: datetime
    statements: list[StatementStats] = field(default_factory=list)  # heaviest total time first
    stats_reset: datetime | None = None  # PostgreSQL 14+: since when the figures count
    role: str = ""  # the role that read it


def take_snapshot(conn: psycopg.Connection) -> Snapshot:
    """Every statement of the current database (pgops' own left out); `conn` from `db.connect` (timeouts set)."""
    extension = pg_stat_statements.locate(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        info = cur.execute(read_sql("workload/database.sql")).fetchone()
        assert info is not None
        with pg_stat_statements.readable():
            rows = cur.execute(pg_stat_statements.query("workload/statements.sql", extension), {"user": None})
            statements = [
                StatementStats(
                    queryid=row["queryid"],
                    query=row["query"] or "",  # NULL: another role's statement, text hidden
                    calls=row["calls"],
                    total_time_ms=float(row["total_time"]),
                    rows=row["rows"],
                    shared_blks_hit=row["shared_blks_hit"],
                    shared_blks_read=row["shared_blks_read"],
                )
                for row in rows.fetchall()
            ]
        reset = None
        if extension.server_version_num >= 140000:
            query = sql.SQL(read_sql("workload/stats_reset.sql")).format(schema=sql.Identifier(extension.schema))
            try:
                row = cur.execute(query).fetchone()
            except psycopg.errors.UndefinedTable:  # the extension predates 1.9 (not updated after an upgrade)
                row = None
            reset = row["stats_reset"] if row else None
    return Snapshot(
        database=info["database"],
        sampled_at=info["sampled_at"],
        statements=statements,
        stats_reset=reset,
        role=info["role"],
    )
