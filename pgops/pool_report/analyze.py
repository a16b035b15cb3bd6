"""Pure decisions on a pool sample: saturation per limit, leak signals, grouping, recommendations, a status.

Every function here works on the plain dataclasses of `sample.py` (and `pgbouncer.py`), so each rule is
tested on hand-made data as well as on a real server.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pgops.config import PoolReportSettings
from pgops.errors import EXIT_CRITICAL, EXIT_OK, EXIT_WARNING
from pgops.pool_report.pgbouncer import PgBouncerSample
from pgops.pool_report.sample import Backend, Sample

IDLE_IN_TRANSACTION_STATES = ("idle in transaction", "idle in transaction (aborted)")
# Every state pg_stat_activity reports, so a report's counts have the same keys each time (zeros included).
STATES = ("active", "idle", *IDLE_IN_TRANSACTION_STATES, "fastpath function call", "disabled")
LEVEL_NAMES = {EXIT_OK: "ok", EXIT_WARNING: "warning", EXIT_CRITICAL: "critical"}

# Leak signals (Problem.kind).
IDLE_IN_TRANSACTION = "idle in transaction"
WAITING_ON_LOCK = "waiting on lock"
LONG_TRANSACTION = "long transaction"
LONG_QUERY = "long query"
XMIN_HORIZON = "holds xmin horizon"
IDLE_POOL_BLOAT = "idle pool bloat"


@dataclass(frozen=True)
class LimitUsage:
    """One limit: connections used against the usable slots, with the level its thresholds give."""

    kind: str  # server, database, role, pgbouncer pool
    name: str
    used: int
    limit: int
    left: int
    ratio: float
    level: int


@dataclass(frozen=True)
class Problem:
    """One leak signal on one session, with what a person needs to act on it."""

    kind: str
    pid: int
    database: str | None
    user: str | None
    application: str
    client: str | None
    age_seconds: float
    detail: str
    query: str | None
    blocked_by: tuple[int, ...]
    terminate: str
    level: int = EXIT_WARNING


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
class PgBouncerPoolUsage:
    database: str
    user: str
    clients_active: int
    clients_waiting: int
    maxwait_seconds: float
    servers_used: int
    pool_size: int
    ratio: float
    level: int


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


def level_for(ratio: float, settings: PoolReportSettings) -> int:
    if ratio >= settings.critical:
        return EXIT_CRITICAL
    if ratio >= settings.warning:
        return EXIT_WARNING
    return EXIT_OK


def _usage(kind: str, name: str, used: int, limit: int, settings: PoolReportSettings) -> LimitUsage:
    ratio = used / limit if limit > 0 else (1.0 if used else 0.0)  # a zero limit is full with one session
    return LimitUsage(kind, name, used, limit, limit - used, ratio, level_for(ratio, settings))


def saturation(sample: Sample, settings: PoolReportSettings) -> list[LimitUsage]:
    """Used / usable for the server, each database with a limit and each role with a limit.

    Usable server slots are max_connections less the slots reserved for superusers (and, on 16+, for
    pg_use_reserved_connections). A database's limit counts every session in it, superusers' too (PostgreSQL
    counts them, it just never refuses a superuser); a superuser role's own limit is not enforced, so it is
    not shown.
    """
    server = sample.server
    usable = server.max_connections - server.superuser_reserved_connections - server.reserved_connections
    limits = [_usage("server", "max_connections", len(sample.backends), usable, settings)]
    per_database = Counter(b.database for b in sample.backends)
    per_role = Counter(b.user for b in sample.backends)
    limits += [
        _usage("database", name, per_database[name], limit, settings)
        for name, limit in sorted(sample.database_limits.items())
    ]
    limits += [
        _usage("role", name, per_role[name], limit, settings)
        for name, limit in sorted(sample.role_limits.items())
        if name not in sample.superusers
    ]
    return limits


_STRING = re.compile(r"(?:[EeBbXxNn]|[Uu]&)?'(?:[^']|'')*'")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*|)\$.*?\$\1\$", re.DOTALL)
_NUMBER = re.compile(r"(?<![\w$.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w$])")


def mask_query(query: str) -> str:
    """Replace literals (strings, dollar-quoted strings, numbers) with `?`, so reports carry no user data."""
    masked = _DOLLAR.sub("?", query)
    masked = _STRING.sub("?", masked)
    return _NUMBER.sub("?", masked)


def shown_query(query: str | None, settings: PoolReportSettings) -> str | None:
    """The last query as a report shows it: constants masked unless asked, whitespace folded, truncated."""
    if query is None:
        return None
    text = mask_query(query) if settings.mask_queries else query
    text = " ".join(text.split())
    limit = max(settings.query_length, 4)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def terminate_sql(pid: int) -> str:
    return f"SELECT pg_terminate_backend({int(pid)});"


def _age(now: datetime, since: datetime | None) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


def _problem(
    kind: str, backend: Backend, age: float, detail: str, settings: PoolReportSettings, level: int = EXIT_WARNING
) -> Problem:
    return Problem(
        kind=kind,
        pid=backend.pid,
        database=backend.database,
        user=backend.user,
        application=backend.application,
        client=backend.client,
        age_seconds=age,
        detail=detail,
        query=shown_query(backend.query, settings),
        blocked_by=backend.blocked_by,
        terminate=terminate_sql(backend.pid),
        level=level,
    )


def _describe(pid: int, by_pid: dict[int, Backend]) -> str:
    other = by_pid.get(pid)
    if other is None:
        return f"pid {pid}"
    return f"pid {pid} ({other.user or '?'}/{other.application or '-'}, {other.state or 'state hidden'})"


def leaks(sample: Sample, settings: PoolReportSettings) -> list[Problem]:
    """Sessions that hold what others need: open transactions, lock waits, old snapshots, long queries."""
    now = sample.sampled_at
    by_pid = {b.pid: b for b in sample.backends}
    waiters: dict[int, list[int]] = defaultdict(list)
    for backend in sample.backends:
        for blocker in backend.blocked_by:
            waiters[blocker].append(backend.pid)
    found: list[Problem] = []
    for b in sample.backends:
        blocking = f"; blocks {len(waiters[b.pid])} session(s): pids {sorted(waiters[b.pid])}" if waiters[b.pid] else ""
        idle_for = _age(now, b.state_change)
        if (
            b.state in IDLE_IN_TRANSACTION_STATES
            and idle_for is not None
            and idle_for >= settings.idle_in_transaction.total_seconds()
        ):
            found.append(
                _problem(IDLE_IN_TRANSACTION, b, idle_for, f"{b.state} for {idle_for:.1f}s{blocking}", settings)
            )
        if b.blocked_by:
            waited = _age(now, b.query_start) or 0.0
            blockers = ", ".join(_describe(pid, by_pid) for pid in b.blocked_by)
            detail = f"waits for a {b.wait_event} lock held by {blockers}"
            # listed from the first moment, but only a wait as long as a long query raises the status
            level = EXIT_WARNING if waited >= settings.long_query.total_seconds() else EXIT_OK
            found.append(_problem(WAITING_ON_LOCK, b, waited, detail, settings, level))
        open_for = _age(now, b.xact_start)
        if open_for is not None and open_for >= settings.long_transaction.total_seconds():
            detail = f"transaction open {open_for:.1f}s{blocking}"
            found.append(_problem(LONG_TRANSACTION, b, open_for, detail, settings))
        running = _age(now, b.query_start)
        if b.state == "active" and running is not None and running >= settings.long_query.total_seconds():
            found.append(_problem(LONG_QUERY, b, running, f"query running {running:.1f}s{blocking}", settings))
        if b.xmin_age is not None and b.xmin_age >= settings.xmin_age:
            held = _age(now, b.xact_start) or 0.0
            detail = f"xmin {b.xmin_age} transactions old: vacuum can't remove rows deleted since"
            found.append(_problem(XMIN_HORIZON, b, held, detail, settings))
    found += idle_pool_bloat(sample, settings)
    return sorted(found, key=lambda p: (-p.level, -p.age_seconds, p.pid))


def idle_pool_bloat(sample: Sample, settings: PoolReportSettings) -> list[Problem]:
    """Applications keeping many idle sessions open for long from one client: one problem each, on the oldest."""
    idle: dict[tuple[str, str | None], list[Backend]] = defaultdict(list)
    for b in sample.backends:
        if b.state == "idle":
            idle[(b.application, b.client)].append(b)
    found = []
    for sessions in idle.values():
        oldest = min(sessions, key=lambda b: b.backend_start or sample.sampled_at)
        age = _age(sample.sampled_at, oldest.backend_start) or 0.0
        if len(sessions) >= settings.idle_pool_sessions and age >= settings.idle_pool_age.total_seconds():
            detail = f"{len(sessions)} idle sessions from this client, oldest connected {age:.0f}s ago"
            found.append(_problem(IDLE_POOL_BLOAT, oldest, age, detail, settings))
    return found


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


def pool_size_for(cores: int) -> int:
    """PostgreSQL's wiki rule of thumb for active connections: (2 x cores) + 1 effective spindle."""
    return cores * 2 + 1


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


def pgbouncer_usage(pgbouncer: PgBouncerSample, settings: PoolReportSettings) -> list[PgBouncerPoolUsage]:
    """Per PgBouncer pool: waiting clients, longest wait and server connections against pool_size.

    A pool with waiting clients is at least a warning: clients queue for a server connection.
    """
    sizes = {d.name: d.pool_size for d in pgbouncer.databases}
    usage = []
    for pool in pgbouncer.pools:
        size = sizes.get(pool.database, 0)
        ratio = pool.servers_used / size if size > 0 else 0.0
        level = level_for(ratio, settings)
        if pool.clients_waiting:
            level = max(level, EXIT_WARNING)
        usage.append(
            PgBouncerPoolUsage(
                database=pool.database,
                user=pool.user,
                clients_active=pool.clients_active,
                clients_waiting=pool.clients_waiting,
                maxwait_seconds=pool.maxwait_seconds,
                servers_used=pool.servers_used,
                pool_size=size,
                ratio=ratio,
                level=level,
            )
        )
    return usage


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


def idle_in_transaction_over(sample: Sample, threshold: timedelta) -> list[Backend]:
    """Sessions idle in a transaction for at least `threshold`: what `--terminate-idle-in-transaction-over` ends."""
    return [
        b
        for b in sample.backends
        if b.state in IDLE_IN_TRANSACTION_STATES
        and (_age(sample.sampled_at, b.state_change) or 0.0) >= threshold.total_seconds()
    ]


@dataclass(frozen=True)
class Growth:
    application: str
    idle_counts: tuple[int, ...]  # oldest sample first


class IdleGrowth:
    """Tracks idle sessions per application across samples; `feed` names those that grew at every step.

    Pure: it keeps only counts, so the daemon can feed it each interval's sample without touching a server.
    """

    def __init__(self, samples: int = 3) -> None:
        if samples < 2:
            raise ValueError("idle growth needs at least 2 samples to compare")
        self._history: deque[Counter[str]] = deque(maxlen=samples)

    def feed(self, sample: Sample) -> list[Growth]:
        self._history.append(Counter(b.application for b in sample.backends if b.state == "idle"))
        if len(self._history) < self._history.maxlen:
            return []
        growing = []
        for application in sorted(self._history[-1]):
            counts = tuple(step[application] for step in self._history)
            if all(later > earlier for earlier, later in itertools.pairwise(counts)):
                growing.append(Growth(application, counts))
        return growing
