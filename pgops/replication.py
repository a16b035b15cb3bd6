"""Targets of one cluster: which are a primary and its standbys (read from the servers, never configured), and
which session on a standby holds the primary's xmin back through hot_standby_feedback.

The primary sees only the WAL sender of a standby and the xmin it reports; the session that holds that xmin lives
on the standby, so it is read there, from the targets of `pgops.toml` that are standbys of the same cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from pgops import db
from pgops.config import Settings, Target
from pgops.errors import PgopsError, first_line
from pgops.output import human_duration
from pgops.resources import read_sql

log = logging.getLogger(__name__)
PRIMARY, STANDBY = "primary", "standby"


@dataclass(frozen=True)
class Identity:
    """A server's cluster (its system identifier), its role there, and the database connected to."""

    system_identifier: str
    in_recovery: bool
    database: str

    @property
    def role(self) -> str:
        return STANDBY if self.in_recovery else PRIMARY


def identity(conn: psycopg.Connection) -> Identity:
    try:
        with conn.transaction():
            row = conn.execute(read_sql("replication/identity.sql")).fetchone()
    except pgerrors.InsufficientPrivilege as exc:
        raise PgopsError(
            f"can't read the server's system identifier ({exc.diag.message_primary}): GRANT pg_monitor TO the "
            "pgops role"
        ) from None
    assert row is not None
    return Identity(row[0], row[1], row[2])


@dataclass(frozen=True)
class Member:
    target: Target
    identity: Identity


def cluster(targets: Sequence[Target], settings: Settings) -> tuple[Member, list[Member]]:
    """The primary and the standbys among `targets`, which must be one database of one cluster; else one line
    saying which two targets differ and how."""
    members = []
    for target in targets:
        with db.connect(target.url, settings.database) as conn:
            members.append(Member(target, identity(conn)))
    first = members[0]
    for other in members[1:]:
        a, b = first.identity, other.identity
        if a.system_identifier != b.system_identifier:
            raise PgopsError(
                f"targets {first.target.name} and {other.target.name} are not one cluster (system identifiers "
                f"{a.system_identifier} and {b.system_identifier}): --all merges a primary and its standbys; "
                "pass --target NAME for one server"
            )
        if a.database != b.database:
            raise PgopsError(
                f"targets {first.target.name} and {other.target.name} are different databases of one cluster "
                f"({a.database!r} and {b.database!r}): --all merges one database's workload; pass --target NAME"
            )
    primaries = [m for m in members if not m.identity.in_recovery]
    if not primaries:
        raise PgopsError(
            f"no primary among the targets ({', '.join(m.target.name for m in members)} are standbys): the advice "
            "is validated and built on the primary; add it to [targets]"
        )
    if len(primaries) > 1:
        raise PgopsError(
            f"targets {primaries[0].target.name} and {primaries[1].target.name} are both a primary of one cluster "
            "(one server named twice, or a promoted standby still running beside its old primary): name each "
            "server once"
        )
    return primaries[0], [m for m in members if m.identity.in_recovery]


@dataclass(frozen=True)
class Holder:
    """The session holding the oldest snapshot on a standby that is a target; none when no session holds one."""

    target: str
    receiver_name: str | None  # the application_name its WAL sender has on the primary (None: hidden)
    pid: int | None
    application: str | None
    user: str | None
    state: str | None
    xmin: str | None
    transaction_seconds: float | None
    query_seconds: float | None

    def describe(self) -> str:
        """`on target replica-1, pid 42 (application report, user app, idle in transaction, transaction open 5m)`"""
        if self.pid is None:
            return f"on target {self.target}, no session holds a snapshot now"
        parts = [f"application {self.application or '-'}", f"user {self.user or '-'}"]
        if self.state:
            parts.append(self.state)
        if self.transaction_seconds is not None:
            parts.append(f"transaction open {human_duration(self.transaction_seconds)}")
        if self.query_seconds is not None and self.state == "active":
            parts.append(f"query running {human_duration(self.query_seconds)}")
        return f"on target {self.target}, pid {self.pid} ({', '.join(parts)})"


def receiver_name(conninfo: str | None, cluster_name: str | None) -> str | None:
    """The application_name a standby's WAL receiver connects with: libpq's from primary_conninfo, else
    cluster_name, else walreceiver. None when its conninfo is hidden (a role without pg_read_all_stats)."""
    if conninfo is None:
        return None
    try:
        given = conninfo_to_dict(conninfo).get("application_name")
    except psycopg.ProgrammingError:
        given = None
    return str(given or cluster_name or "walreceiver")


def holders(primary: Identity, peers: Sequence[Target], settings: Settings) -> list[Holder]:
    """The oldest snapshot on each of `peers` that is a standby of the primary's cluster; a peer that can't be
    reached or read is left out (the check still names the standby, from the primary)."""
    found = []
    for peer in peers:
        try:
            with db.connect(peer.url, settings.database) as conn:
                seen = identity(conn)
                if not seen.in_recovery or seen.system_identifier != primary.system_identifier:
                    continue
                row = conn.cursor(row_factory=dict_row).execute(read_sql("replication/oldest_snapshot.sql")).fetchone()
        except (PgopsError, psycopg.Error) as exc:
            log.debug("target %s: %s", peer.name, first_line(exc))
            continue
        assert row is not None
        found.append(
            Holder(
                target=peer.name,
                receiver_name=receiver_name(row["receiver_conninfo"], row["cluster_name"]),
                pid=row["pid"],
                application=row["application_name"],
                user=row["user"],
                state=row["state"],
                xmin=row["xmin"],
                transaction_seconds=row["transaction_seconds"],
                query_seconds=row["query_seconds"],
            )
        )
    return found


def holders_of(conn: psycopg.Connection, peers: Sequence[Target], settings: Settings) -> list[Holder]:
    """`holders` for the primary at `conn`; none when its system identifier can't be read (the report goes on)."""
    try:
        primary = identity(conn)
    except PgopsError as exc:
        log.debug("no standby sessions: %s", exc.message)
        return []
    return holders(primary, peers, settings)


def holder_of(application_name: str | None, feedback_xmin: str | None, found: Sequence[Holder]) -> Holder | None:
    """The standby target behind a WAL sender: the one whose oldest snapshot is the xmin it reports, else the one
    whose WAL receiver carries its application_name."""
    for holder in found:
        if feedback_xmin is not None and holder.xmin == feedback_xmin:
            return holder
    named = [h for h in found if application_name and h.receiver_name == application_name]
    return named[0] if len(named) == 1 else None
