"""Every Prometheus metric pgops exports, in one place (all named `pgops_*`).

Metrics live in prometheus_client's default registry, which also carries the process collector (RSS, CPU,
open files) that the daemon's `/metrics` serves. Each job's section below is the only place its metrics are
declared; label values for known objects (watched views, policies) are pre-initialized by the job so a
series exists before its first event.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# -- refresh ---------------------------------------------------------------------------------------------------

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
    "pgops_cleanup_rows_left", "Rows matching the policy's condition after its last run (planner estimate).", ["policy"]
)
CLEANUP_THROTTLED = Counter(
    "pgops_cleanup_throttled_total",
    "Times a cleanup paused because the database was unhealthy, by reason.",
    ["policy", "reason"],
)
CLEANUP_THROTTLED_SECONDS = Counter(
    "pgops_cleanup_throttled_seconds_total", "Seconds cleanups spent paused for database health.", ["policy"]
)

# -- pool report -----------------------------------------------------------------------------------------------

# -- advisor ---------------------------------------------------------------------------------------------------

# -- daemon ----------------------------------------------------------------------------------------------------
