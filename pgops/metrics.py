"""Every Prometheus metric pgops exports, in one place (all named `pgops_*`).

Metrics live in prometheus_client's default registry, which also carries the process collector (RSS, CPU,
open files) that the daemon's `/metrics` serves. Each job's section below is the only place its metrics are
declared; label values for known objects (watched views, policies) are pre-initialized by the job so a
series exists before its first event. Every job metric and the daemon's carry a `target` label: a configured
target's name (`[targets.NAME]`, or "default"), so the label's values are bounded by the configuration.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# The target the calling job runs for: the daemon sets it around each run; a command works on "default".
CURRENT_TARGET: ContextVar[str] = ContextVar("pgops_metrics_target", default="default")


class PerTarget:
    """A job's metric with a leading `target` label filled in from CURRENT_TARGET, so one daemon's targets keep
    their own series while the job modules label only what they know (a view, a policy)."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._only_target = list(metric._labelnames) == ["target"]
        self._lock = threading.Lock()

    def labels(self, *values: str, **named: str) -> Any:
        target = CURRENT_TARGET.get()
        if named:
            return self._metric.labels(target=target, **named)
        return self._metric.labels(target, *values)

    def clear(self) -> None:
        """Drop this target's series only (a job refreshing its label set), not the other targets'."""
        target = CURRENT_TARGET.get()
        with self._lock:
            for key in [key for key in list(self._metric._metrics) if key[0] == target]:
                self._metric.remove(*key)

    def __getattr__(self, name: str) -> Any:
        # a metric with no label of its own: set(), inc(), observe() act on this target's series
        return getattr(self._metric.labels(CURRENT_TARGET.get()) if self._only_target else self._metric, name)


def _counter(name: str, documentation: str, labelnames: Any = (), **kwargs: Any) -> Any:
    return PerTarget(Counter(name, documentation, ["target", *labelnames], **kwargs))


def _gauge(name: str, documentation: str, labelnames: Any = (), **kwargs: Any) -> Any:
    return PerTarget(Gauge(name, documentation, ["target", *labelnames], **kwargs))


def _histogram(name: str, documentation: str, labelnames: Any = (), **kwargs: Any) -> Any:
    return PerTarget(Histogram(name, documentation, ["target", *labelnames], **kwargs))


# -- refresh ---------------------------------------------------------------------------------------------------

REFRESHES = _counter(
    "pgops_refreshes",  # exported as pgops_refreshes_total
    "Refreshes of watched materialized views, by outcome (success or failure).",
    ["view", "outcome"],
)
REFRESH_DURATION = _histogram(
    "pgops_refresh_duration_seconds",
    "How long each refresh of a watched materialized view took.",
    ["view"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf")),
)
REFRESH_STALE_SECONDS = _gauge(
    "pgops_refresh_stale_seconds",
    "Seconds since the oldest write not yet covered by a refresh of the view (0 when fresh).",
    ["view"],
)
REFRESH_LAST_SUCCESS = _gauge(
    "pgops_refresh_last_success_timestamp_seconds",
    "Unix time of the view's last successful refresh (0 before the first).",
    ["view"],
)

# -- cleanup ---------------------------------------------------------------------------------------------------

CLEANUP_ROWS_DELETED = _counter("pgops_cleanup_rows_deleted_total", "Rows deleted by cleanup policies.", ["policy"])
CLEANUP_BATCHES = _counter("pgops_cleanup_batches_total", "Cleanup batches committed.", ["policy"])
CLEANUP_BATCH_DURATION = _histogram(
    "pgops_cleanup_batch_duration_seconds",
    "Duration of one cleanup batch (its own transaction).",
    ["policy"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 10, 30),
)
CLEANUP_RUNS = _counter("pgops_cleanup_runs_total", "Cleanup runs by how they ended.", ["policy", "status"])
CLEANUP_LAST_SUCCESS = _gauge(
    "pgops_cleanup_last_success_timestamp_seconds", "Unix time the policy's last run finished its work.", ["policy"]
)
CLEANUP_SECONDS_SINCE_SUCCESS = _gauge(
    "pgops_cleanup_seconds_since_last_success",
    "Seconds since the policy's last successful run (in this process).",
    ["policy"],
)
CLEANUP_ROWS_LEFT = _gauge(
    "pgops_cleanup_rows_left", "Rows matching the policy's condition after its last run (estimate).", ["policy"]
)
CLEANUP_THROTTLED = _counter(
    "pgops_cleanup_throttled_total",
    "Times a cleanup paused because the database was unhealthy, by reason.",
    ["policy", "reason"],
)
CLEANUP_THROTTLED_SECONDS = _counter(
    "pgops_cleanup_throttled_seconds_total", "Seconds cleanups spent paused for database health.", ["policy"]
)
# (target, policy) → Unix time; read at scrape time by the gauge below
_cleanup_succeeded_at: dict[tuple[str, str], float] = {}


def cleanup_series(policy: str) -> None:
    """Create a policy's cleanup series, so they exist before its first batch."""
    CLEANUP_ROWS_DELETED.labels(policy)
    CLEANUP_BATCHES.labels(policy)
    CLEANUP_ROWS_LEFT.labels(policy)
    CLEANUP_THROTTLED_SECONDS.labels(policy)
    key = (CURRENT_TARGET.get(), policy)
    CLEANUP_SECONDS_SINCE_SUCCESS.labels(policy).set_function(
        lambda: time.time() - _cleanup_succeeded_at[key] if key in _cleanup_succeeded_at else float("nan")
    )


def cleanup_succeeded(policy: str) -> None:
    now = _cleanup_succeeded_at[(CURRENT_TARGET.get(), policy)] = time.time()
    CLEANUP_LAST_SUCCESS.labels(policy).set(now)


# -- pool report -----------------------------------------------------------------------------------------------
# Label values are bounded by pgops.pool_report.export: the top N applications (the rest as "other"), the top N
# limits by saturation, a fixed set of problem kinds.
POOL_CONNECTIONS = _gauge(
    "pgops_pool_connections", "Client connections by application (top N, the rest as other) and state",
    ["application", "state"],
)  # fmt: skip
POOL_LIMIT_USED = _gauge("pgops_pool_limit_used_connections", "Connections counted against a limit", ["kind", "name"])
POOL_LIMIT_SIZE = _gauge("pgops_pool_limit_connections", "Usable connection slots of a limit", ["kind", "name"])
POOL_SATURATION = _gauge("pgops_pool_saturation_ratio", "Used / usable connection slots of a limit", ["kind", "name"])
POOL_PROBLEMS = _gauge("pgops_pool_problems", "Sessions showing a leak signal, by kind", ["kind"])
POOL_PROBLEM_OLDEST = _gauge(
    "pgops_pool_problem_oldest_seconds", "Age of the oldest session of each leak kind", ["kind"]
)
POOL_STATUS = _gauge("pgops_pool_status", "Pool report status: 0 ok, 1 warning, 2 critical")
POOL_HIDDEN_SESSIONS = _gauge("pgops_pool_hidden_sessions", "Sessions whose details pgops' role can't see")
POOL_PGBOUNCER_WAITING = _gauge("pgops_pool_pgbouncer_clients_waiting", "PgBouncer clients waiting", ["pool"])
POOL_PGBOUNCER_MAXWAIT = _gauge(
    "pgops_pool_pgbouncer_maxwait_seconds", "Longest wait of a PgBouncer client in the pool", ["pool"]
)
POOL_IDLE_GROWING = _gauge(
    "pgops_pool_idle_growing_connections", "Idle connections of applications whose idle count grew at every sample",
    ["application"],
)  # fmt: skip


# -- advisor ---------------------------------------------------------------------------------------------------

ADVISOR_RUNS = _counter("pgops_advisor_runs_total", "Index advisor runs, by outcome (ok, error).", ["outcome"])
ADVISOR_DURATION = _histogram(
    "pgops_advisor_duration_seconds", "Time one index advisor run takes.", buckets=(1, 5, 15, 60, 300, 900, 3600)
)
ADVISOR_PROPOSED = _gauge("pgops_advisor_proposed_indexes", "Indexes the last advisor run proposed.")
ADVISOR_SKIPPED = _counter(
    "pgops_advisor_skipped_statements_total", "Statements the advisor could not use, by reason.", ["reason"]
)
ADVISOR_LAST_SUCCESS = _gauge("pgops_advisor_last_success_timestamp_seconds", "When an advisor run last succeeded.")
ADVISOR_APPLIED = _counter("pgops_advisor_applied_indexes_total", "Indexes built by --apply, by outcome.", ["outcome"])

# -- daemon ----------------------------------------------------------------------------------------------------

DAEMON_JOB_RUNS = Counter(
    "pgops_daemon_job_runs_total",
    "Job runs by outcome: ok, failed, locked (another daemon runs it), done (another daemon ran this period), "
    "stopped (the daemon was stopping), busy (skipped: its previous run here had not finished)",
    ["target", "job", "outcome"],
)
DAEMON_JOB_DURATION = Histogram(
    "pgops_daemon_job_duration_seconds",
    "Wall time of job runs that did their work",
    ["target", "job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800),
)
DAEMON_JOB_RETRIES = Counter(
    "pgops_daemon_job_retries_total",
    "Attempts of a job run that failed transiently and were retried",
    ["target", "job"],
)
DAEMON_JOB_LAST_SUCCESS = Gauge(
    "pgops_daemon_job_last_success_timestamp_seconds",
    "Unix time of the job's last successful run here",
    ["target", "job"],
)
DAEMON_JOB_RUNNING = Gauge("pgops_daemon_job_running", "1 while this daemon runs the job", ["target", "job"])
DAEMON_HEALTHY = Gauge("pgops_daemon_healthy", "1 while the scheduler runs and the database answers")
DAEMON_DATABASE_UP = Gauge(
    "pgops_daemon_database_up", "1 when the last health check reached the target's database", ["target"]
)

# -- targets: the servers the daemon works on ------------------------------------------------------------------
# `target` is a configured target's name (bounded by the configuration), never a host from the server.
TARGET_WRITABLE = Gauge(
    "pgops_target_writable",
    "1 when the target's server took writes at the last check (a primary), 0 when read-only (a standby)",
    ["target"],
)
TARGET_SWITCHES = Counter(
    "pgops_target_switches_total", "Times the daemon found the target's URL leading to another server", ["target"]
)
DAEMON_PAUSED_JOBS = Gauge(
    "pgops_daemon_paused_jobs", "Primary-only jobs (refresh, cleanup) waiting for the target to take writes", ["target"]
)
