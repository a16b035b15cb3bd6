"""Following the primary: which server a target's URL leads to, whether it takes writes, and which jobs wait for
one that does.

Refresh and cleanup write, so they run on a primary only (`Job.primary_only`). The runner reads the role of the
session each of their runs gets; on a read-only server (a standby, or an old primary after a failover) the job is
paused, not failed: one log line when it pauses, one when it resumes, and gauges. libpq does the following: with a
multi-host URL (`host=a,b target_session_attrs=read-write`) each new connection goes to the host that takes writes
now, so the daemon drops sessions on the wrong server and reconnects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from pgops import metrics
from pgops.resources import read_sql

log = logging.getLogger(__name__)

PRIMARY = "primary"


@dataclass(frozen=True)
class Server:
    """A server a session reached: its host and port as libpq connected to them, and its role now."""

    host: str
    port: int
    role: str  # primary; standby (in recovery); read-only (a primary refusing writes)

    @property
    def writable(self) -> bool:
        return self.role == PRIMARY

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def describe(self) -> str:
        return f"{self.address} ({self.role})"


def read_server(conn: psycopg.Connection) -> Server:
    """The server `conn` is connected to, and its role."""
    row = conn.execute(read_sql("daemon/server.sql")).fetchone()
    assert row is not None
    in_recovery, read_only = row
    role = "standby" if in_recovery else "read-only" if read_only else PRIMARY
    return Server(conn.info.host, conn.info.port, role)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class TargetHealth:
    """One target as /healthz shows it."""

    name: str
    database_ok: bool  # the last health check reached it
    server: str | None  # host:port the daemon's session is on now; None before the first connection
    role: str | None
    connected_since: str | None  # when the daemon first saw this server (UTC)
    switched_at: str | None  # the last time the URL led to another server; None if it never did
    previous_server: str | None
    paused_jobs: list[str]


class ServerWatch:
    """One target's server as the daemon last saw it, its switches, and its paused jobs.

    `on_primary` runs when a session finds a primary where the last one found another server or a read-only one
    (a failover, a promotion): the daemon renews its pool then, so jobs don't wait out the pool's reconnection
    backoff, which grew while no server took writes.
    """

    def __init__(self, target: str, on_primary: Callable[[], None] | None = None) -> None:
        self.target = target
        self.on_primary = on_primary
        self.server: Server | None = None
        self.connected_since: float | None = None
        self.switched_at: float | None = None
        self.previous: Server | None = None
        self._paused: dict[str, float] = {}  # job → when it paused (monotonic)
        self._lock = threading.Lock()
        metrics.TARGET_WRITABLE.labels(target)
        metrics.TARGET_SWITCHES.labels(target)
        metrics.DAEMON_PAUSED_JOBS.labels(target).set(0)

    @property
    def paused(self) -> list[str]:
        with self._lock:
            return sorted(self._paused)

    def seen(self, server: Server) -> None:
        """Record the server a session reached; log a switch to another server, or a change of its role."""
        with self._lock:
            before = self.server
            self.server = server
            metrics.TARGET_WRITABLE.labels(self.target).set(server.writable)
            if before is None:
                self.connected_since = time.time()
                return
            moved = (before.host, before.port) != (server.host, server.port)
            if moved:
                self.previous, self.switched_at = before, time.time()
                self.connected_since = self.switched_at
                metrics.TARGET_SWITCHES.labels(self.target).inc()
        if moved:
            log.warning(
                "target %s: now on %s, was on %s",
                self.target,
                server.describe(),
                before.describe(),
                extra={"target": self.target, "server": server.address, "role": server.role},
            )
        elif before.role != server.role:
            log.warning(
                "target %s: %s is now %s (was %s)",
                self.target,
                server.address,
                server.role,
                before.role,
                extra={"target": self.target, "server": server.address, "role": server.role},
            )
        if server.writable and (moved or not before.writable) and self.on_primary is not None:
            self.on_primary()

    def pause(self, job: str, server: Server) -> None:
        """The job found a read-only server: say so once, when it starts waiting."""
        with self._lock:
            first = job not in self._paused
            self._paused.setdefault(job, time.monotonic())
            metrics.DAEMON_PAUSED_JOBS.labels(self.target).set(len(self._paused))
        if first:
            log.warning(
                "job %s paused: %s takes no writes; it resumes when the URL leads to a primary",
                job,
                server.describe(),
                extra={"job": job, "target": self.target, "server": server.address, "role": server.role},
            )

    def resume(self, job: str, server: Server) -> None:
        with self._lock:
            since = self._paused.pop(job, None)
            metrics.DAEMON_PAUSED_JOBS.labels(self.target).set(len(self._paused))
        if since is not None:
            waited = time.monotonic() - since
            log.info(
                "job %s resumed on %s after %.1fs paused",
                job,
                server.describe(),
                waited,
                extra={"job": job, "target": self.target, "server": server.address, "paused_seconds": round(waited, 3)},
            )

    def health(self, database_ok: bool = True) -> TargetHealth:
        with self._lock:
            server, previous = self.server, self.previous
            return TargetHealth(
                name=self.target,
                database_ok=database_ok,
                server=server.address if server else None,
                role=server.role if server else None,
                connected_since=_iso(self.connected_since),
                switched_at=_iso(self.switched_at),
                previous_server=previous.address if previous else None,
                paused_jobs=sorted(self._paused),
            )
