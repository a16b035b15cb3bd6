"""Fixtures that hold real sessions in given states, and roles that are dropped afterwards."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import PgServer


class Sessions:
    """Opens connections, runs blocking statements in threads, and ends all of it at teardown."""

    def __init__(self) -> None:
        self.connections: list[psycopg.Connection] = []
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def open(self, dsn: str, **kwargs: Any) -> psycopg.Connection:
        kwargs.setdefault("autocommit", True)
        conn = psycopg.connect(dsn, **kwargs)
        self.connections.append(conn)
        return conn

    def run_in_background(self, conn: psycopg.Connection, statement: str) -> None:
        """Run a statement that blocks (a lock wait, a pg_sleep) in a thread; cancelled at teardown."""

        def run() -> None:
            try:
                conn.execute(statement)
            except psycopg.errors.QueryCanceled:
                pass  # teardown cancels it
            except BaseException as exc:
                self.errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def close(self) -> None:
        for conn in self.connections:
            if not conn.closed:
                conn.cancel()  # through PgBouncer too; harmless on an idle session
        for thread in self.threads:
            thread.join(timeout=10)
        for conn in self.connections:
            conn.close()


@pytest.fixture
def sessions() -> Iterator[Sessions]:
    held = Sessions()
    yield held
    held.close()
    assert not held.errors, held.errors


@pytest.fixture
def make_role(pg_server: PgServer) -> Iterator[Callable[..., str]]:
    """`make_role(connection_limit=3)` creates a login role with a unique name; dropped after the test."""
    created: list[str] = []

    def make(connection_limit: int = -1) -> str:
        name = f"pool_role_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            statement = sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {}")
            conn.execute(statement.format(sql.Identifier(name), sql.Literal(connection_limit)))
        created.append(name)
        return name

    yield make
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        for name in created:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
