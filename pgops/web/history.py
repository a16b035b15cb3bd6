"""What the daemon saw, kept in memory for its pages: pool samples for the connections chart, and the last
cleanup runs, refresh outcomes and index advice. Bounded rings: an idle daemon's memory does not grow with time.

The jobs record here (`HISTORY`), the pages read copies. Nothing is written to the database: a daemon that
restarts starts its charts afresh.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pgops import metrics

if TYPE_CHECKING:  # the jobs import this module in the daemon; it needs none of these at run time
    from pgops.cleanup.runner import CleanupResult
    from pgops.config import Settings
    from pgops.pool_report.analyze import Report
    from pgops.refresh.process import RefreshOutcome

# A chart of more samples than this would not show them anyway: a span over 7 days at a short interval is cut.
MAX_SAMPLES = 20_000
# Limits drawn per pool sample: the server's and the most saturated others (a role per application can be many).
LIMITS_PER_SAMPLE = 5


@dataclass(frozen=True)
class PoolPoint:
    at: datetime
    total: int
    status: int
    limits: tuple[tuple[str, float], ...]  # ("server", 0.42), ("database shop", 0.3): label and ratio used


@dataclass(frozen=True)
class CleanupRun:
    finished_at: datetime
    policy: str
    result: CleanupResult | None  # None when the run failed before it had one
    error: str | None = None


@dataclass(frozen=True)
class RefreshRun:
    at: datetime
    view: str
    outcome: str
    seconds: float | None
    error: str | None


@dataclass(frozen=True)
class AdviceRecord:
    at: datetime
    summary: str
    script: str


def _now() -> datetime:
    return datetime.now(UTC)


class History:
    def __init__(self, samples: int = 1440, runs: int = 200) -> None:
        self._lock = threading.Lock()
        self.pool: deque[PoolPoint] = deque(maxlen=samples)
        self.cleanup: deque[CleanupRun] = deque(maxlen=runs)
        self.refresh: deque[RefreshRun] = deque(maxlen=runs)
        self.advice: AdviceRecord | None = None
        # the target whose runs are kept: the pages show one server, the first target's in a daemon of several
        self.target = "default"

    def _mine(self) -> bool:
        return metrics.CURRENT_TARGET.get() == self.target

    def configure(self, settings: Settings) -> None:
        """Size the rings for the settings: `chart_span` of pool samples, `history_runs` of the others."""
        interval = settings.pool_report.interval.total_seconds()
        samples = min(MAX_SAMPLES, math.ceil(settings.web.chart_span.total_seconds() / interval) + 1)
        with self._lock:
            self.pool = deque(self.pool, maxlen=samples)
            self.cleanup = deque(self.cleanup, maxlen=settings.web.history_runs)
            self.refresh = deque(self.refresh, maxlen=settings.web.history_runs)

    def record_pool(self, report: Report) -> None:
        if not self._mine():
            return
        server = [u for u in report.limits if u.kind == "server"]
        others = sorted((u for u in report.limits if u.kind != "server"), key=lambda u: -u.ratio)
        chosen = (server + others)[:LIMITS_PER_SAMPLE]
        point = PoolPoint(
            at=report.sampled_at,
            total=report.total,
            status=report.status,
            limits=tuple((f"{u.kind} {u.name}" if u.kind != "server" else "server", u.ratio) for u in chosen),
        )
        with self._lock:
            self.pool.append(point)

    def record_cleanup(self, policy: str, result: CleanupResult | None, error: str | None = None) -> None:
        if not self._mine():
            return
        with self._lock:
            self.cleanup.append(CleanupRun(_now(), policy, result, error))

    def record_refresh(self, outcomes: list[RefreshOutcome]) -> None:
        if not self._mine():
            return
        at = _now()
        runs = [
            RefreshRun(at, o.view, o.outcome, o.duration.total_seconds() if o.duration else None, o.error)
            for o in outcomes
            if o.outcome in ("refreshed", "failed")  # what was done; "waiting" and "clean" every 5 s are noise
        ]
        with self._lock:
            self.refresh.extend(runs)

    def record_advice(self, summary: str, script: str) -> None:
        if not self._mine():
            return
        with self._lock:
            self.advice = AdviceRecord(_now(), summary, script)

    def pool_points(self, since: timedelta | None = None) -> list[PoolPoint]:
        with self._lock:
            points = list(self.pool)
        if since is None or not points:
            return points
        start = points[-1].at - since
        return [p for p in points if p.at >= start]

    def cleanup_runs(self) -> list[CleanupRun]:
        with self._lock:
            return list(self.cleanup)

    def refresh_runs(self) -> list[RefreshRun]:
        with self._lock:
            return list(self.refresh)

    def last_advice(self) -> AdviceRecord | None:
        with self._lock:
            return self.advice


HISTORY = History()
