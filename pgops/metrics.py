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

# -- pool report -----------------------------------------------------------------------------------------------

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
