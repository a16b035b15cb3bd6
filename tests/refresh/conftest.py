"""Fixtures for the refresh tests: pgops installed (without pg_cron, unless a test asks) and short intervals."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql

from pgops import migrate
from pgops.config import RefreshSettings, Settings

FAST = RefreshSettings(
    debounce=timedelta(milliseconds=300),
    max_wait=timedelta(seconds=1),
    interval=timedelta(milliseconds=100),
    cron_schedule="",  # the tests drive processing themselves; one test lets pg_cron do it
    statement_timeout=timedelta(seconds=10),
    lock_timeout=timedelta(seconds=2),
)


def settings_for(dsn: str, refresh: RefreshSettings = FAST) -> Settings:
    return dataclasses.replace(Settings(), refresh=refresh, database=dataclasses.replace(Settings().database, url=dsn))


@pytest.fixture
def settings(dsn: str) -> Settings:
    return settings_for(dsn)


@pytest.fixture
def installed(dsn: str, settings: Settings) -> Iterator[Settings]:
    """pgops' migrations applied to the test's database, without a pg_cron job."""
    migrate.upgrade(dsn, settings)
    yield settings


BASE_SCHEMA = """
CREATE TABLE funds (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE trades (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, fund_id integer NOT NULL,
                     amount numeric NOT NULL);
INSERT INTO funds SELECT i, 'fund ' || i FROM generate_series(1, 5) i;
INSERT INTO trades (fund_id, amount) SELECT 1 + i % 5, i FROM generate_series(1, 50) i;
CREATE MATERIALIZED VIEW fund_stats AS
    SELECT f.id AS fund_id, count(t.id) AS trades, coalesce(sum(t.amount), 0) AS volume
    FROM funds f LEFT JOIN trades t ON t.fund_id = f.id GROUP BY f.id;
CREATE UNIQUE INDEX ON fund_stats (fund_id);
"""


@pytest.fixture
def fund_stats(conn: psycopg.Connection, installed: Settings) -> str:
    """Two tables and a materialized view over them, installed pgops; returns the view's name."""
    conn.execute(BASE_SCHEMA)
    return "public.fund_stats"


def differs_from_query(conn: psycopg.Connection, view: str) -> int:
    """Rows that differ between the materialized view and a fresh run of its query (0 when it is fresh)."""
    definition = conn.execute("SELECT pg_get_viewdef(%s::regclass)", (view,)).fetchone()[0].rstrip("; \n")
    query = sql.SQL(
        "SELECT (SELECT count(*) FROM (TABLE {view} EXCEPT ALL ({definition})) a)"
        " + (SELECT count(*) FROM (({definition}) EXCEPT ALL TABLE {view}) b)"
    ).format(view=sql.Identifier(*view.split(".")), definition=sql.SQL(definition))
    return conn.execute(query).fetchone()[0]
