"""When the health throttle pauses a cleanup (`pgops/cleanup/health.py`), on hand-made samples."""

from __future__ import annotations

import pytest

from pgops.cleanup.health import HealthSample, throttle_reason
from pgops.config import CleanupSettings

HEALTHY = HealthSample(replication_lag=None, archiver_failing=False, lock_waiters=0, autovacuum_on_table=False)


@pytest.mark.parametrize(
    ("sample", "kind"),
    [
        (HEALTHY, None),
        (HealthSample(5.0, False, 3, False), None),
        (HealthSample(31.0, False, 0, False), "replication_lag"),
        (HealthSample(None, True, 0, False), "archiver"),
        (HealthSample(None, False, 11, False), "lock_waiters"),
        (HealthSample(None, False, 0, True), "autovacuum"),
        (HealthSample(60.0, True, 50, True), "replication_lag"),  # the first reason wins
    ],
)
def test_throttle_reason(sample, kind):
    throttle = throttle_reason(sample, CleanupSettings())
    assert (throttle.kind if throttle else None) == kind


def test_throttle_on_autovacuum_can_be_turned_off():
    sample = HealthSample(None, False, 0, True)
    assert throttle_reason(sample, CleanupSettings(throttle_on_autovacuum=False)) is None
