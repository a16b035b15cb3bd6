"""Prometheus gauges from a pool report, with bounded label values so a busy server can't blow up a TSDB.

Only the top N applications (by connections) get their own label; the rest add up under `other`. Limits
are the server's plus the top N databases/roles/PgBouncer pools by saturation. Gauges are cleared and set
again on each export so an application that went away stops being reported.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from pgops import metrics
from pgops.pool_report.analyze import Report
from pgops.pool_report.growth import Growth
from pgops.pool_report.leaks import (
    IDLE_IN_TRANSACTION,
    IDLE_POOL_BLOAT,
    LONG_QUERY,
    LONG_TRANSACTION,
    WAITING_ON_LOCK,
    XMIN_HORIZON,
)
from pgops.pool_report.limits import LimitKind, LimitUsage

OTHER = "other"
PROBLEM_KINDS = (IDLE_IN_TRANSACTION, WAITING_ON_LOCK, LONG_TRANSACTION, LONG_QUERY, XMIN_HORIZON, IDLE_POOL_BLOAT)


def bounded_applications(totals: Counter[str], top_n: int) -> dict[str, str]:
    """Application → label value: itself for the top N by connections, `other` for the rest."""
    top = {name for name, _ in sorted(totals.items(), key=lambda item: (-item[1], item[0]))[: max(top_n, 0)]}
    return {name: (name or "(unnamed)") if name in top else OTHER for name in totals}


def _limits(report: Report, top_n: int) -> list[LimitUsage]:
    server = [u for u in report.limits if u.kind == LimitKind.SERVER]
    others = [u for u in report.limits if u.kind != LimitKind.SERVER]
    pools = [
        LimitUsage(
            LimitKind.PGBOUNCER_POOL,
            f"{p.database}/{p.user}",
            p.servers_used,
            p.pool_size,
            p.pool_size - p.servers_used,
            p.ratio,
            p.level,
        )
        for p in report.pgbouncer
    ]
    ranked = sorted(others + pools, key=lambda u: (-u.ratio, u.kind, u.name))
    return server + ranked[: max(top_n, 0)]


def export_metrics(report: Report, top_n: int) -> None:
    """Set the pool report's gauges from `report` (the daemon calls this after each sample)."""
    totals: Counter[str] = Counter()
    states: dict[str, Counter[str]] = defaultdict(Counter)
    for group in report.groups:
        totals[group.application] += group.total
        states[group.application].update(group.states)
    labels = bounded_applications(totals, top_n)
    connections: Counter[tuple[str, str]] = Counter()
    for application, counts in states.items():
        for state, count in counts.items():
            connections[(labels[application], state)] += count
    metrics.POOL_CONNECTIONS.clear()
    for (application, state), count in connections.items():
        metrics.POOL_CONNECTIONS.labels(application, state).set(count)

    for gauge in (metrics.POOL_LIMIT_USED, metrics.POOL_LIMIT_SIZE, metrics.POOL_SATURATION):
        gauge.clear()
    for usage in _limits(report, top_n):
        metrics.POOL_LIMIT_USED.labels(usage.kind, usage.name).set(usage.used)
        metrics.POOL_LIMIT_SIZE.labels(usage.kind, usage.name).set(usage.limit)
        metrics.POOL_SATURATION.labels(usage.kind, usage.name).set(usage.ratio)

    for kind in PROBLEM_KINDS:
        ages = [p.age_seconds for p in report.problems if p.kind == kind]
        metrics.POOL_PROBLEMS.labels(kind).set(len(ages))
        metrics.POOL_PROBLEM_OLDEST.labels(kind).set(max(ages, default=0.0))

    metrics.POOL_STATUS.set(report.status)
    metrics.POOL_HIDDEN_SESSIONS.set(report.hidden_sessions)
    metrics.POOL_PGBOUNCER_WAITING.clear()
    metrics.POOL_PGBOUNCER_MAXWAIT.clear()
    for pool in sorted(report.pgbouncer, key=lambda p: (-p.clients_waiting, -p.ratio))[: max(top_n, 0)]:
        name = f"{pool.database}/{pool.user}"
        metrics.POOL_PGBOUNCER_WAITING.labels(name).set(pool.clients_waiting)
        metrics.POOL_PGBOUNCER_MAXWAIT.labels(name).set(pool.maxwait_seconds)


def export_idle_growth(growing: list[Growth], top_n: int) -> None:
    """Set the idle-growth gauge from `IdleGrowth.feed`'s answer (the top N growing applications)."""
    metrics.POOL_IDLE_GROWING.clear()
    ranked = sorted(growing, key=lambda g: (-g.idle_counts[-1], g.application))[: max(top_n, 0)]
    for growth in ranked:
        metrics.POOL_IDLE_GROWING.labels(growth.application or "(unnamed)").set(growth.idle_counts[-1])
