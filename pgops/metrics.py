"""Every Prometheus metric pgops exports, in one place (all named `pgops_*`).

Metrics live in prometheus_client's default registry, which also carries the process collector (RSS, CPU,
open files) that the daemon's `/metrics` serves. Each job's section below is the only place its metrics are
declared; label values for known objects (watched views, policies) are pre-initialized by the job so a
series exists before its first event.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram  # noqa: F401  (used by the sections below)

# -- refresh ---------------------------------------------------------------------------------------------------

# -- cleanup ---------------------------------------------------------------------------------------------------

# -- pool report -----------------------------------------------------------------------------------------------

# -- advisor ---------------------------------------------------------------------------------------------------

# -- daemon ----------------------------------------------------------------------------------------------------
