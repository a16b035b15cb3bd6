"""The advisory-lock guard against a real server: run locks between sessions, slot claims between daemons."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import psycopg

from pgops.config import DatabaseSettings
from pgops.daemon.guard import Coordinator, run_lock, run_lock_key
from tests.daemon.conftest import wait_for


def held_advisory_locks(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
    ).fetchone()[0]


def test_run_lock_excludes_other_sessions_and_is_released(dsn, conn):
    with psycopg.connect(dsn, autocommit=True) as a, psycopg.connect(dsn, autocommit=True) as b:
        with run_lock(a, "refresh") as got_a:
            assert got_a
            with run_lock(b, "refresh") as got_b:
                assert not got_b
            with run_lock(b, "advisor") as got_other:
                assert got_other  # locks are per job
        assert held_advisory_locks(conn) == 0  # released by the session itself, at once
        with run_lock(b, "refresh") as got_b:
            assert got_b


def test_a_dead_session_frees_the_run_lock(dsn, conn):
    dying = psycopg.connect(dsn, autocommit=True)
    dying.execute("SELECT pg_advisory_lock(%s)", (run_lock_key("refresh"),))
    dying.close()  # the session ends as a killed daemon's would
    with psycopg.connect(dsn, autocommit=True) as other, run_lock(other, "refresh") as got:
        assert got


def test_slot_claims_make_a_period_run_once_across_daemons(dsn, conn):
    period = datetime(2026, 11, 23, 10, 0, 5, tzinfo=UTC)
    first, second = Coordinator(dsn, DatabaseSettings()), Coordinator(dsn, DatabaseSettings())
    try:
        assert first.claim("tick", period)
        assert first.claim("tick", period)  # the holder may claim its own period again (a retry)
        assert not second.claim("tick", period)
        assert second.claim("tock", period)
        assert second.claim("tick", period + timedelta(seconds=5))  # next period: whoever fires first
        assert not first.claim("tick", period + timedelta(seconds=5))
        first.release("tick")  # a failed run gives its period back
        assert second.claim("tick", period)
        assert held_advisory_locks(conn) == 2  # one claim per job per daemon, older ones released
    finally:
        first.close()
        second.close()
    wait_for(lambda: held_advisory_locks(conn) == 0, 5, "the closed sessions to release their claims")


def test_coordinator_reconnects_after_losing_its_session(dsn, conn):
    coordinator = Coordinator(dsn, DatabaseSettings())
    try:
        coordinator.ping()
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND pid <> pg_backend_pid()")  # fmt: skip
        with contextlib.suppress(psycopg.OperationalError):
            coordinator.ping()  # the call that finds the session dead may fail; the next one reconnects
        coordinator.ping()
    finally:
        coordinator.close()
