"""Coordination between daemons through PostgreSQL advisory locks, so several daemons can run for availability.

Two locks, both session-level, so a daemon that dies (its sessions end) frees them without anyone's help:

- the *run lock* of a job, taken with `pg_try_advisory_lock` on the pooled connection the run uses and released
  in `finally`: one daemon runs a job at a time;
- the *slot claim* of a job for one schedule period, taken on the daemon's long-lived coordination connection
  and kept until the job's next run here: a daemon that fires a few milliseconds after another one finished
  the same period sees the claim and skips, so each job runs once per schedule, not once per daemon.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import threading
from collections.abc import Iterator
from datetime import datetime

import psycopg

from pgops import db
from pgops.config import DatabaseSettings
from pgops.daemon.failover import Server, read_server
from pgops.errors import ConnectError

log = logging.getLogger(__name__)

# The health check must notice a server that vanished without closing the socket in seconds (db.KEEPALIVES).
COORDINATION = db.ConnectOptions(keepalives=True)
_RUN_NAMESPACE = b"pgops.daemon.run:"
_SLOT_NAMESPACE = b"pgops.daemon.slot:"


def _key(data: bytes) -> int:
    """A stable signed 64-bit advisory lock key (Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


def run_lock_key(job: str) -> int:
    return _key(_RUN_NAMESPACE + job.encode())


def slot_key(job: str, period_end: datetime) -> int:
    return _key(_SLOT_NAMESPACE + job.encode() + b"@" + str(int(period_end.timestamp() * 1000)).encode())


@contextlib.contextmanager
def run_lock(conn: psycopg.Connection, job: str) -> Iterator[bool]:
    """Yield whether this session got the job's run lock; release it afterwards if it did."""
    key = run_lock_key(job)
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
    try:
        yield got
    finally:
        if got and not conn.closed and not conn.broken:
            # The session may have died under the job: then the server already released the lock.
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


class Coordinator:
    """The daemon's own long-lived session: holds slot claims and answers the health check.

    It reconnects on the next call after losing the server; claims held by the lost session are gone with it, so
    after an outage a period may run once more (at least once, never lost).
    """

    def __init__(self, dsn: str, settings: DatabaseSettings) -> None:
        self.dsn = dsn
        self.settings = settings
        self._conn: psycopg.Connection | None = None
        self._claims: dict[str, int] = {}  # job → key of the slot claim this session holds
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._discard()
            # a ConnectError that retry() sees as transient when the server is down or starting
            self._conn = db.connect(self.dsn, self.settings, COORDINATION)
        return self._conn

    def _discard(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None
        self._claims.clear()

    def _execute(self, query: str, params: tuple[object, ...] = ()) -> object:
        try:
            return self._connection().execute(query, params).fetchone()[0]
        except (psycopg.OperationalError, ConnectError):
            self._discard()
            raise

    def ping(self) -> None:
        """Raise psycopg's error if the database does not answer."""
        with self._lock:
            self._execute("SELECT 1")

    def server(self) -> Server:
        """The server this session is on now, and its role; after losing it, reconnects through libpq's choice
        of host. When no host accepts the URL's session (`target_session_attrs=read-write` while only a standby
        is up), the server a plain session reaches is returned instead: reachable, and read-only."""
        with self._lock:
            for attempt in (1, 2):  # a session lost since the last call is only noticed by using it
                try:
                    conn = self._connection()
                except ConnectError:
                    read_only = self._read_only_server()
                    if read_only is None:
                        raise
                    return read_only
                try:
                    return read_server(conn)
                except psycopg.OperationalError:
                    self._discard()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def _read_only_server(self) -> Server | None:
        """The server a session of any role reaches, when it takes no writes; else None."""
        try:
            options = dataclasses.replace(COORDINATION, target_session_attrs="any")
            with db.connect(self.dsn, self.settings, options) as conn:
                server = read_server(conn)
        except (psycopg.Error, ConnectError):
            return None
        return None if server.writable else server

    def claim(self, job: str, period_end: datetime) -> bool:
        """Claim the job's period; False when another daemon holds the claim (it ran, or runs, this period)."""
        key = slot_key(job, period_end)
        with self._lock:
            held = self._claims.get(job)
            if held == key:
                return True
            if not self._execute("SELECT pg_try_advisory_lock(%s)", (key,)):
                return False
            if held is not None:
                self._execute("SELECT pg_advisory_unlock(%s)", (held,))
            self._claims[job] = key
            return True

    def release(self, job: str) -> None:
        """Give the job's claim back (its run failed), so the period's work is not marked done."""
        with self._lock:
            key = self._claims.pop(job, None)
            if key is not None and self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def close(self) -> None:
        with self._lock:
            self._discard()
