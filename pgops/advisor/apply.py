"""`--apply`: build the proposed indexes one at a time, concurrently, with progress; a failed build leaves an
INVALID index behind, which is dropped (concurrently) before moving on, and an INVALID leftover of an earlier
run is dropped and built again rather than kept by IF NOT EXISTS."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import psycopg
from psycopg import sql

from pgops import metrics
from pgops.advisor.model import Advice
from pgops.config import Settings
from pgops.db import ConnectOptions, connect
from pgops.progress import QUIET, Progress


class Built(StrEnum):
    """What `--apply` did with one proposed index."""

    BUILT = "built"
    EXISTS = "exists"  # a valid index of that name was there already
    FAILED = "failed"


@dataclass(frozen=True)
class Applied:
    name: str
    outcome: Built
    detail: str = ""


def apply(dsn: str, settings: Settings, advice: Advice, progress: Progress = QUIET) -> list[Applied]:
    cfg = settings.advisor
    results: list[Applied] = []
    with (
        connect(
            dsn, settings.database, ConnectOptions(statement_timeout=cfg.build_timeout, lock_timeout=cfg.lock_timeout)
        ) as conn,
        progress.task("building indexes", total=len(advice.recommendations)) as advance,
    ):
        for rec in advice.recommendations:
            schema = rec.candidate.table[0]
            existed = _index_state(conn, schema, rec.name)
            if existed is False:  # an INVALID leftover of an earlier failed build: IF NOT EXISTS would keep it
                conn.execute(sql.SQL(rec.drop_sql))
                existed = None
            try:
                conn.execute(sql.SQL(rec.create_sql))
            except psycopg.Error as exc:
                detail = (exc.diag.message_primary or str(exc)).splitlines()[0]
                if _index_state(conn, schema, rec.name) is False and existed is None:
                    conn.execute(sql.SQL(rec.drop_sql))
                    detail += " (dropped the INVALID leftover)"
                results.append(Applied(rec.name, Built.FAILED, detail))
            else:
                detail = ""
                if existed is None and rec.comment_sql:
                    try:
                        conn.execute(sql.SQL(rec.comment_sql))
                    except psycopg.Error as exc:  # built all the same: a later run counts it as the app's own
                        detail = f"not marked as pgops' own: {(exc.diag.message_primary or str(exc)).splitlines()[0]}"
                results.append(Applied(rec.name, Built.EXISTS if existed is not None else Built.BUILT, detail))
            metrics.ADVISOR_APPLIED.labels(outcome=results[-1].outcome).inc()
            advance()
    return results


def _index_state(conn: psycopg.Connection, schema: str, name: str) -> bool | None:
    """True for a valid index, False for an INVALID one, None when there is none."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        [schema, name],
    ).fetchone()
    return row[0] if row else None
