"""Every Prometheus metric pgops exports, in one place (all named `pgops_*`).

Metrics live in prometheus_client's default registry, which also carries the process collector (RSS, CPU,
open files) that the daemon's `/metrics` serves. Each job's section below is the only place its metrics are
declared; label values for known objects (watched views, policies) are pre-initialized by the job so a
series exists before its first event.
"""

from __future__ import annotations

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

# -- pool report -----------------------------------------------------------------------------------------------

# -- advisor ---------------------------------------------------------------------------------------------------

# -- daemon ----------------------------------------------------------------------------------------------------
