"""Shared by the cleanup tests: the `items` table, its counts, the policy that cleans it, metric values."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from pgops.config import CleanupPolicy

ROOT = Path(__file__).resolve().parent.parent.parent


POLICY = CleanupPolicy(table="public.items", expired_column="expires_at", batch_size=50, pause=timedelta(0))


def make_items(conn: psycopg.Connection, expired: int, live: int, *, index: bool = True) -> None:
    """`items`: `expired` rows already past expires_at (1 s apart, oldest first by id), `live` rows a day ahead."""
    conn.execute(
        "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, expires_at timestamptz, note text)"
    )
    conn.execute(
        "INSERT INTO items (expires_at, note) SELECT now() - interval '1 hour' - (%s - g) * interval '1 s', 'old' "
        "FROM generate_series(1, %s) g",
        (expired, expired),
    )
    conn.execute(
        "INSERT INTO items (expires_at, note) SELECT now() + interval '1 day', 'live' FROM generate_series(1, %s)",
        (live,),
    )
    if index:
        conn.execute("CREATE INDEX ON items (expires_at)")
    conn.execute("ANALYZE items")


def counts(conn: psycopg.Connection) -> tuple[int, int]:
    """(expired rows left, live rows left)."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE expires_at < now()), count(*) FILTER (WHERE note = 'live') FROM items"
    ).fetchone()
    return row[0], row[1]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"target": "default", **labels}) or 0.0


# (expired, live) shapes that make a run walk the heap (most rows match) or the index (few do)
WALKS = pytest.mark.parametrize(("walk", "expired", "live"), [("heap", 1000, 300), ("index", 400, 8000)])


def wal_bytes(conn: psycopg.Connection, statement_or_call) -> int:
    """WAL the server wrote while `statement_or_call` ran (a statement for `conn`, or a function to call)."""
    before = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    if callable(statement_or_call):
        statement_or_call()
    else:
        conn.execute(statement_or_call)
    return int(conn.execute("SELECT pg_current_wal_insert_lsn() - %s::pg_lsn", (before,)).fetchone()[0])
