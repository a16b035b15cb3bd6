"""Health as systemd and Prometheus see it: /healthz and /metrics, and a watchdog fed only while healthy."""

from __future__ import annotations

import json
import threading
import time

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from pgops.daemon.jobs import load_jobs
from pgops.daemon.main import Daemon
from pgops.daemon.systemd import Notifier
from tests.daemon.conftest import daemon_settings, free_port, http_get, wait_for
from tests.daemon.sample_jobs import LEDGER_DDL

TICK_OK = {"target": "default", "job": "tick", "outcome": "ok"}


def tick_runs(base: str) -> float:
    """The daemon's count of successful `tick` runs, as a Prometheus scrape reads it."""
    for family in text_string_to_metric_families(http_get(f"{base}/metrics")[1]):
        for sample in family.samples:
            if sample.name == "pgops_daemon_job_runs_total" and sample.labels == TICK_OK:
                return sample.value
    return 0.0


def test_healthz_metrics_and_a_watchdog_that_stops_when_the_scheduler_does(migrated_dsn, conn, notify_socket):
    conn.execute(LEDGER_DDL)
    ticks_before = REGISTRY.get_sample_value("pgops_daemon_job_runs_total", TICK_OK) or 0
    settings = daemon_settings(migrated_dsn, "ledger_jobs")
    daemon = Daemon(settings, load_jobs(settings), notifier=Notifier({"NOTIFY_SOCKET": str(notify_socket.path)}))
    port = free_port()
    daemon.start(listen=f"127.0.0.1:{port}")
    watcher = threading.Thread(target=daemon.watch)
    watcher.start()
    base = f"http://127.0.0.1:{port}"
    try:
        assert notify_socket.wait("READY", "1")["STATUS"].startswith("idle, 2 job(s) scheduled")
        status, body = http_get(f"{base}/healthz")
        assert status == 200
        health = json.loads(body)
        [target] = health.pop("targets")
        assert health | {"running_jobs": []} == {
            "ok": True, "reason": "ok", "scheduler_running": True, "database_ok": True, "running_jobs": []
        }  # fmt: skip
        assert (target["name"], target["role"], target["switched_at"], target["paused_jobs"]) == (
            "default", "primary", None, []
        )  # fmt: skip
        wait_for(lambda: tick_runs(base) > ticks_before, 5, "a tick run counted in /metrics")
        assert "process_resident_memory_bytes" in http_get(f"{base}/metrics")[1]
        assert http_get(f"{base}/nothing-here")[0] == 404
        wait_for(lambda: notify_socket.count("WATCHDOG") >= 2, 5, "WATCHDOG=1 while healthy")

        daemon.scheduler.shutdown()  # the scheduler dies under the daemon
        status, body = http_get(f"{base}/healthz")
        assert status == 503 and json.loads(body)["reason"] == "scheduler not running"
        notify_socket.wait("STATUS", "scheduler not running", timeout=5)
        fed = notify_socket.count("WATCHDOG")
        time.sleep(1.2)  # more than two health intervals
        assert notify_socket.count("WATCHDOG") == fed  # starved: systemd restarts a daemon whose scheduler died
    finally:
        assert daemon.stop()
        watcher.join(5)
    assert notify_socket.wait("STOPPING", "1")
