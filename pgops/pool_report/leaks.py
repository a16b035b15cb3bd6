"""Pure decisions on the sessions of a pool sample: leak signals (open transactions, lock waits, old snapshots,
long queries, idle pools), each a `Problem` carrying what a person needs to act on it."""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pgops.config import PoolReportSettings
from pgops.errors import EXIT_OK, EXIT_WARNING
from pgops.pool_report.sample import Backend, Sample

IDLE_IN_TRANSACTION_STATES = ("idle in transaction", "idle in transaction (aborted)")


class Leak(StrEnum):
    """A leak signal (`Problem.kind`)."""

    IDLE_IN_TRANSACTION = "idle in transaction"
    WAITING_ON_LOCK = "waiting on lock"
    LONG_TRANSACTION = "long transaction"
    LONG_QUERY = "long query"
    XMIN_HORIZON = "holds xmin horizon"
    IDLE_POOL_BLOAT = "idle pool bloat"


# the names the rest of the report (and its tests) use
IDLE_IN_TRANSACTION = Leak.IDLE_IN_TRANSACTION
WAITING_ON_LOCK = Leak.WAITING_ON_LOCK
LONG_TRANSACTION = Leak.LONG_TRANSACTION
LONG_QUERY = Leak.LONG_QUERY
XMIN_HORIZON = Leak.XMIN_HORIZON
IDLE_POOL_BLOAT = Leak.IDLE_POOL_BLOAT


@dataclass(frozen=True)
class Problem:
    """One leak signal on one session, with what a person needs to act on it."""

    kind: Leak
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


def _problem(kind: str, backend: Backend, age: float, detail: str, settings: PoolReportSettings) -> Problem:
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
            waiting = _problem(WAITING_ON_LOCK, b, waited, detail, settings)
            if waited < settings.long_query.total_seconds():
                waiting = dataclasses.replace(waiting, level=EXIT_OK)
            found.append(waiting)
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


def idle_in_transaction_over(sample: Sample, threshold: timedelta) -> list[Backend]:
    """Sessions idle in a transaction for at least `threshold`: what `--terminate-idle-in-transaction-over` ends."""
    return [
        b
        for b in sample.backends
        if b.state in IDLE_IN_TRANSACTION_STATES
        and (_age(sample.sampled_at, b.state_change) or 0.0) >= threshold.total_seconds()
    ]
