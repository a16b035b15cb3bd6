"""Every Prometheus metric pgops exports, in one place (all named `pgops_*`).

Metrics live in prometheus_client's default registry, which also carries the process collector (RSS, CPU,
open files) that the daemon's `/metrics` serves. Each job's section below is the only place its metrics are
declared; label values for known objects (watched views, policies) are pre-initialized by the job so a
series exists before its first event.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

# -- refresh ---------------------------------------------------------------------------------------------------

REFRESHES = Counter(
    "pgops_refreshes",  # exported as pgops_refreshes_total
    "Refreshes of watched materialized views, by outcome (success or failure).",
    ["view", "outcome"],
)
REFRESH_DURATION = Histogram(
    "pgops_refresh_duration_seconds",
    "How long each refresh of a watched materialized view took.",
    ["view"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf")),
)
REFRESH_STALE_SECONDS = Gauge(
    "pgops_refresh_stale_seconds",
    "Seconds since the oldest write not yet covered by a refresh of the view (0 when fresh).",
    ["view"],
)
REFRESH_LAST_SUCCESS = Gauge(
    "pgops_refresh_last_success_timestamp_seconds",
    "Unix time of the view's last successful refresh (0 before the first).",
    ["view"],
)

# -- cleanup ---------------------------------------------------------------------------------------------------

CLEANUP_ROWS_DELETED = Counter("pgops_cleanup_rows_deleted_total", "Rows deleted by cleanup policies.", ["policy"])
CLEANUP_BATCHES = Counter("pgops_cleanup_batches_total", "Cleanup batches committed.", ["policy"])
CLEANUP_BATCH_DURATION = Histogram(
    "pgops_cleanup_batch_duration_seconds",
    "Duration of one cleanup batch (its own transaction).",
    ["policy"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 10, 30),
)
CLEANUP_RUNS = Counter("pgops_cleanup_runs_total", "Cleanup runs by how they ended.", ["policy", "status"])
CLEANUP_LAST_SUCCESS = Gauge(
    "pgops_cleanup_last_success_timestamp_seconds", "Unix time the policy's last run finished its work.", ["policy"]
)
CLEANUP_SECONDS_SINCE_SUCCESS = Gauge(
    "pgops_cleanup_seconds_since_last_success",
    "Seconds since the policy's last successful run (in this process).",
    ["policy"],
)
CLEANUP_ROWS_LEFT = Gauge(
    "pgops_cleanup_rows_left", "Rows matching the policy's condition after its last run (estimate).", ["policy"]
)
CLEANUP_THROTTLED = Counter(
    "pgops_cleanup_throttled_total",
    "Times a cleanup paused because the database was unhealthy, by reason.",
    ["policy", "reason"],
)
CLEANUP_THROTTLED_SECONDS = Counter(
    "pgops_cleanup_throttled_seconds_total", "Seconds cleanups spent paused for database health.", ["policy"]
)
_cleanup_succeeded_at: dict[str, float] = {}  # policy → Unix time; read at scrape time by the gauge below


def cleanup_series(policy: str) -> None:
    """Create a policy's cleanup series, so they exist before its first batch."""
    CLEANUP_ROWS_DELETED.labels(policy)
    CLEANUP_BATCHES.labels(policy)
    CLEANUP_ROWS_LEFT.labels(policy)
    CLEANUP_THROTTLED_SECONDS.labels(policy)
    CLEANUP_SECONDS_SINCE_SUCCESS.labels(policy).set_function(
        lambda: time.time() - _cleanup_succeeded_at[policy] if policy in _cleanup_succeeded_at else float("nan")
    )


def cleanup_succeeded(policy: str) -> None:
    _cleanup_succeeded_at[policy] = time.time()
    CLEANUP_LAST_SUCCESS.labels(policy).set(_cleanup_succeeded_at[policy])


# -- pool report -----------------------------------------------------------------------------------------------
# Label values are bounded by pgops.pool_report.export: the top N applications (the rest as "other"), the top N
# limits by saturation, a fixed set of problem kinds.
POOL_CONNECTIONS = Gauge(
    "pgops_pool_connections", "Client connections by application (top N, the rest as other) and state",
    ["application", "state"],
)  # fmt: skip
POOL_LIMIT_USED = Gauge("pgops_pool_limit_used_connections", "Connections counted against a limit", ["kind", "name"])
POOL_LIMIT_SIZE = Gauge("pgops_pool_limit_connections", "Usable connection slots of a limit", ["kind", "name"])
POOL_SATURATION = Gauge("pgops_pool_saturation_ratio", "Used / usable connection slots of a limit", ["kind", "name"])
POOL_PROBLEMS = Gauge("pgops_pool_problems", "Sessions showing a leak signal, by kind", ["kind"])
POOL_PROBLEM_OLDEST = Gauge(
    "pgops_pool_problem_oldest_seconds", "Age of the oldest session of each leak kind", ["kind"]
)
POOL_STATUS = Gauge("pgops_pool_status", "Pool report status: 0 ok, 1 warning, 2 critical")
POOL_HIDDEN_SESSIONS = Gauge("pgops_pool_hidden_sessions", "Sessions whose details pgops' role can't see")
POOL_PGBOUNCER_WAITING = Gauge("pgops_pool_pgbouncer_clients_waiting", "PgBouncer clients waiting", ["pool"])
POOL_PGBOUNCER_MAXWAIT = Gauge(
    "pgops_pool_pgbouncer_maxwait_seconds", "Longest wait of a PgBouncer client in the pool", ["pool"]
)
POOL_IDLE_GROWING = Gauge(
    "pgops_pool_idle_growing_connections", "Idle connections of applications whose idle count grew at every sample",
    ["application"],
)  # fmt: skip


# -- advisor ---------------------------------------------------------------------------------------------------

ADVISOR_RUNS = Counter("pgops_advisor_runs_total", "Index advisor runs, by outcome (ok, error).", ["outcome"])
ADVISOR_DURATION = Histogram(
    "pgops_advisor_duration_seconds", "Time one index advisor run takes.", buckets=(1, 5, 15, 60, 300, 900, 3600)
)
ADVISOR_PROPOSED = Gauge("pgops_advisor_proposed_indexes", "Indexes the last advisor run proposed.")
ADVISOR_SKIPPED = Counter(
    "pgops_advisor_skipped_statements_total", "Statements the advisor could not use, by reason.", ["reason"]
)
ADVISOR_LAST_SUCCESS = Gauge("pgops_advisor_last_success_timestamp_seconds", "When an advisor run last succeeded.")
ADVISOR_APPLIED = Counter("pgops_advisor_applied_indexes_total", "Indexes built by --apply, by outcome.", ["outcome"])

# -- daemon ----------------------------------------------------------------------------------------------------

DAEMON_JOB_RUNS = Counter(
    "pgops_daemon_job_runs_total",
    "Job runs by outcome: ok, failed, locked (another daemon runs it), done (another daemon ran this period), "
    "stopped (the daemon was stopping), busy (skipped: its previous run here had not finished)",
    ["job", "outcome"],
)
DAEMON_JOB_DURATION = Histogram(
    "pgops_daemon_job_duration_seconds",
    "Wall time of job runs that did their work",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800),
)
DAEMON_JOB_RETRIES = Counter(
    "pgops_daemon_job_retries_total", "Attempts of a job run that failed transiently and were retried", ["job"]
)
DAEMON_JOB_LAST_SUCCESS = Gauge(
    "pgops_daemon_job_last_success_timestamp_seconds", "Unix time of the job's last successful run here", ["job"]
)
DAEMON_JOB_RUNNING = Gauge("pgops_daemon_job_running", "1 while this daemon runs the job", ["job"])
DAEMON_HEALTHY = Gauge("pgops_daemon_healthy", "1 while the scheduler runs and the database answers")
DAEMON_DATABASE_UP = Gauge("pgops_daemon_database_up", "1 when the last health check reached the database")
