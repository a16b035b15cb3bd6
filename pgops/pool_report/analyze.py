"""The pool report of one sample: the decisions of `limits` and `leaks` put together, with sessions grouped,
recommendations, what pgops' role can't see, and a status; `crossings` says what got worse since the last one.

Every function here is pure, on the plain dataclasses of `sample.py` (and `pgbouncer.py`), so each rule is
tested on hand-made data as well as on a real server.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from pgops.config import PoolReportSettings
from pgops.errors import EXIT_OK, EXIT_WARNING, LEVELS, Level
from pgops.pool_report.growth import Growth as Growth  # re-exported: the daemon imports it from here
from pgops.pool_report.growth import IdleGrowth as IdleGrowth
from pgops.pool_report.leaks import IDLE_IN_TRANSACTION_STATES, IDLE_POOL_BLOAT, Problem, leaks
from pgops.pool_report.limits import (
    LEVEL_NAMES,
    LimitUsage,
    PgBouncerPoolUsage,
    pgbouncer_usage,
    pool_size_for,
    saturation,
)
from pgops.pool_report.pgbouncer import PgBouncerSample
from pgops.pool_report.sample import Backend, Sample

# Every state pg_stat_activity reports, so a report's counts have the same keys each time (zeros included).
STATES = ("active", "idle", *IDLE_IN_TRANSACTION_STATES, "fastpath function call", "disabled")


@dataclass(frozen=True)
class Group:
    """Sessions of one (database, user, application, client address), with their worst problem."""

    database: str | None
    user: str | None
    application: str
    client: str | None
    total: int
    states: dict[str, int]
    problems: int
    worst: Problem | None


@dataclass(frozen=True)
class StandbyUsage:
    """On a primary, one standby streaming from it: its replay lag, and the xmin its hot_standby_feedback holds
    the primary's vacuum to, with the session on the standby that holds it when the standby is a target."""

    name: str  # its application_name, else its WAL sender's pid
    client: str | None
    state: str | None  # None: hidden from a role without pg_monitor
    replay_lag_bytes: int | None
    replay_lag_seconds: float | None
    xmin_age: int | None
    held_by: str | None  # `on target replica-1, pid 42 (...)`
    level: int


@dataclass(frozen=True)
class Report:
    sampled_at: datetime
    status: int
    total: int
    states: dict[str, int]
    limits: list[LimitUsage]
    problems: list[Problem]
    groups: list[Group]
    recommendations: list[str]
    visibility: str | None  # what pgops' role can't see, and the grant that fixes it
    hidden_sessions: int
    pgbouncer: list[PgBouncerPoolUsage] = field(default_factory=list)
    standbys: list[StandbyUsage] = field(default_factory=list)

    @property
    def status_name(self) -> str:
        return LEVEL_NAMES[self.status]

    @property
    def outcome(self) -> Level:
        return LEVELS[self.status]


def groups(sample: Sample, problems: list[Problem]) -> list[Group]:
    """Sessions by (database, user, application, client), the groups with problems and most sessions first."""
    members: dict[tuple, list[Backend]] = defaultdict(list)
    for b in sample.backends:
        members[(b.database, b.user, b.application, b.client)].append(b)
    problems_of: dict[tuple, list[Problem]] = defaultdict(list)
    for p in problems:  # already worst first
        problems_of[(p.database, p.user, p.application, p.client)].append(p)
    result = [
        Group(
            database=key[0],
            user=key[1],
            application=key[2],
            client=key[3],
            total=len(sessions),
            states=dict(Counter(b.state or "hidden" for b in sessions)),
            problems=len(problems_of[key]),
            worst=problems_of[key][0] if problems_of[key] else None,
        )
        for key, sessions in members.items()
    ]
    return sorted(result, key=lambda g: (-(g.worst.level if g.worst else 0), -g.problems, -g.total, str(g.application)))


def recommendations(sample: Sample, settings: PoolReportSettings, problems: list[Problem]) -> list[str]:
    """Settings and architecture changes that would prevent what this sample shows.

    A timeout the sampling session set itself is unknown (None) and gets no advice either way.
    """
    server = sample.server
    advice = []
    if server.idle_in_transaction_session_timeout_ms == 0:
        advice.append(
            "idle_in_transaction_session_timeout is unset: a leaked transaction holds its locks and snapshot "
            "forever; set it (e.g. ALTER ROLE app SET idle_in_transaction_session_timeout = '5min')"
        )
    if server.idle_session_timeout_ms == 0 and any(p.kind == IDLE_POOL_BLOAT for p in problems):
        advice.append(
            "idle_session_timeout is unset and idle sessions pile up: set it per application role "
            "(ALTER ROLE app SET idle_session_timeout = '30min'), never for a pooler's own role"
        )
    cores = settings.server_cores or server.local_cores
    active = sum(1 for b in sample.backends if b.state == "active")
    if cores:
        size = pool_size_for(cores)
        if len(sample.backends) > 2 * size:
            advice.append(
                f"{len(sample.backends)} connections for {cores} cores ({active} active now): about {size} "
                "server connections ((2 x cores) + 1) would serve the load; size the pools to that"
            )
    else:
        advice.append("server cores unknown: set pool_report.server_cores to get a pool size ((2 x cores) + 1)")
    by_application: dict[str, list[Backend]] = defaultdict(list)
    for b in sample.backends:
        if not b.hidden and b.application.lower() not in ("pgbouncer", "pgpool", "odyssey"):
            by_application[b.application].append(b)
    for application, sessions in sorted(by_application.items()):
        idle = sum(1 for b in sessions if b.state == "idle")
        if len(sessions) >= settings.idle_pool_sessions and idle / len(sessions) >= 0.8:
            advice.append(
                f"application {application or '(unnamed)'!r} holds {len(sessions)} connections, {idle} idle: "
                "put it behind a pooler (PgBouncer in transaction mode)"
            )
    return advice


def visibility(sample: Sample) -> tuple[str | None, int]:
    """What pgops' role can't see in this sample, and the grant that fixes it."""
    hidden = sum(1 for b in sample.backends if b.hidden)
    if sample.server.reads_all_stats or not hidden:
        return None, hidden
    role = sample.server.current_user
    return (
        f"role {role} can't see the state, times, xmin or query of {hidden} session(s) of other roles "
        f"(their leaks go unreported; hidden background workers may be counted): GRANT pg_monitor TO {role}",
        hidden,
    )


def state_counts(backends: list[Backend]) -> dict[str, int]:
    """Sessions per state, every known state present; `hidden` counts sessions pgops' role can't see."""
    counts = Counter(b.state or "hidden" for b in backends)
    return {state: counts[state] for state in (*STATES, *sorted(set(counts) - set(STATES)))}


def standby_usage(rows: list[dict], holders: dict[int, str], settings: PoolReportSettings) -> list[StandbyUsage]:
    """Each standby of a primary (rows of sql/status/standbys.sql); a warning when its feedback holds the xmin
    back by `xmin_age` transactions or more. `holders`: by WAL sender pid, the session on the standby that does."""
    found = []
    for row in rows:
        age = row["feedback_xmin_age"]
        found.append(
            StandbyUsage(
                name=row["application_name"] or f"WAL sender {row['pid']}",
                client=row["client_addr"],
                state=row["state"],
                replay_lag_bytes=row["replay_lag_bytes"],
                replay_lag_seconds=row["replay_lag_seconds"],
                xmin_age=age,
                held_by=holders.get(row["pid"]),
                level=EXIT_WARNING if age is not None and age >= settings.xmin_age else EXIT_OK,
            )
        )
    return found


def analyze(
    sample: Sample,
    settings: PoolReportSettings,
    pgbouncer: PgBouncerSample | None = None,
    standbys: list[StandbyUsage] | None = None,
) -> Report:
    """The whole report for one sample; `status` is the worst level of any limit, pool, problem or standby."""
    limits = saturation(sample, settings)
    problems = leaks(sample, settings)
    pools = pgbouncer_usage(pgbouncer, settings) if pgbouncer else []
    note, hidden = visibility(sample)
    standbys = standbys or []
    levels = [u.level for u in limits] + [p.level for p in problems] + [p.level for p in pools]
    levels += [s.level for s in standbys]
    return Report(
        sampled_at=sample.sampled_at,
        status=max(levels, default=EXIT_OK),
        total=len(sample.backends),
        states=state_counts(sample.backends),
        limits=limits,
        problems=problems,
        groups=groups(sample, problems),
        recommendations=recommendations(sample, settings, problems),
        visibility=note,
        hidden_sessions=hidden,
        pgbouncer=pools,
        standbys=standbys,
    )


def crossings(previous: Report | None, current: Report) -> list[str]:
    """What moved to a worse level since the previous report, one line each, for the daemon's log."""
    before = {(u.kind, u.name): u.level for u in previous.limits} if previous else {}
    pools_before = {(p.database, p.user): p.level for p in previous.pgbouncer} if previous else {}
    seen = {(p.kind, p.pid) for p in previous.problems if p.level > EXIT_OK} if previous else set()
    lines = [
        f"{u.kind} {u.name}: {LEVEL_NAMES[u.level]} at {u.used}/{u.limit} connections ({u.ratio:.0%})"
        for u in current.limits
        if u.level > before.get((u.kind, u.name), EXIT_OK)
    ]
    lines += [
        f"pgbouncer pool {p.database}/{p.user}: {LEVEL_NAMES[p.level]}, {p.servers_used}/{p.pool_size} servers, "
        f"{p.clients_waiting} clients waiting"
        for p in current.pgbouncer
        if p.level > pools_before.get((p.database, p.user), EXIT_OK)
    ]
    lines += [
        f"{p.kind}: pid {p.pid} ({p.user}/{p.application or '-'} from {p.client or 'local'}): {p.detail}"
        for p in current.problems
        if p.level > EXIT_OK and (p.kind, p.pid) not in seen
    ]
    return lines
