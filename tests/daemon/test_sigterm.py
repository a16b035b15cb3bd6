"""`pgops daemon` as systemd runs it: a real subprocess, a real NOTIFY_SOCKET, SIGTERM in the middle of a batch job."""

from __future__ import annotations

import time

import pytest

from tests.daemon.conftest import http_get, wait_for
from tests.daemon.sample_jobs import ITEMS_DDL, LEDGER_DDL

ROWS, BATCH = 3000, 50


@pytest.mark.timing
def test_sigterm_during_a_cleanup_finishes_the_batch_and_exits_0(migrated_dsn, conn, start_daemon, notify_socket):
    conn.execute(ITEMS_DDL)
    conn.execute("INSERT INTO daemon_test_items (id) SELECT generate_series(1, %s)", (ROWS,))
    env = {
        "NOTIFY_SOCKET": str(notify_socket.path),
        "WATCHDOG_USEC": "1000000",  # WatchdogSec=1: WATCHDOG=1 every half second
        "PGOPS_TEST_BATCH": str(BATCH),
        "PGOPS_TEST_PAUSE": "0.2",
    }
    daemon = start_daemon(migrated_dsn, "purge_jobs", env=env)
    ready = notify_socket.wait("READY", "1")
    assert "STATUS" in ready and ready["MAINPID"] == str(daemon.proc.pid)
    notify_socket.wait("STATUS", "running purge")

    def batches() -> int:
        return conn.execute("SELECT count(*) FROM daemon_test_batches").fetchone()[0]

    wait_for(lambda: batches() >= 3, 20, "three committed batches")
    status, body = http_get(f"{daemon.base_url}/healthz")
    assert status == 200, body
    assert '"running_jobs": ["purge"]' in body
    status, metrics = http_get(f"{daemon.base_url}/metrics")
    assert status == 200
    assert 'pgops_daemon_job_running{job="purge",target="default"} 1.0' in metrics
    assert "process_resident_memory_bytes" in metrics and "process_cpu_seconds_total" in metrics
    assert notify_socket.count("WATCHDOG") >= 1

    daemon.terminate()
    signalled = time.monotonic()
    code = daemon.proc.wait(15)
    took = time.monotonic() - signalled
    assert code == 0, daemon.log_path.read_text()
    assert took < 10
    stopping = notify_socket.wait("STOPPING", "1", timeout=1)
    assert "purge" in stopping.get("STATUS", "")

    remaining = conn.execute("SELECT count(*) FROM daemon_test_items").fetchone()[0]
    logged = conn.execute("SELECT coalesce(sum(rows), 0), count(*) FROM daemon_test_batches").fetchone()
    assert 0 < remaining < ROWS, "SIGTERM should have stopped the job between batches"
    assert ROWS - remaining == logged[0]  # every deleted row belongs to a committed, logged batch
    assert (ROWS - remaining) % BATCH == 0  # no batch half-done
    log = daemon.log()
    assert any(entry.get("job") == "purge" and entry.get("outcome") == "stopped" for entry in log), log
    assert all("password" not in str(entry) for entry in log)


@pytest.mark.timing
def test_a_batch_that_ignores_sigterm_is_abandoned_and_rolled_back(migrated_dsn, conn, start_daemon, notify_socket):
    """Past the stop timeout the daemon leaves anyway, still exit 0: the server rolls back the open batch."""
    conn.execute(ITEMS_DDL)
    conn.execute(LEDGER_DDL)
    conn.execute("INSERT INTO daemon_test_items (id) SELECT generate_series(1, 100)")
    env = {"NOTIFY_SOCKET": str(notify_socket.path), "PGOPS_TEST_HOLD_IGNORES_STOP": "1"}
    daemon = start_daemon(migrated_dsn, "hold_jobs", env=env, daemon='stop_timeout = "1s"\n')
    notify_socket.wait("STATUS", "running hold")
    wait_for(
        lambda: conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgops' AND state = 'idle in transaction'"
        ).fetchone()[0],
        20,
        "the hold job's open transaction",
    )
    daemon.terminate()
    signalled = time.monotonic()
    assert daemon.proc.wait(15) == 0
    assert time.monotonic() - signalled < 10
    assert any("abandoning hold" in str(entry.get("msg")) for entry in daemon.log())
    wait_for(
        lambda: conn.execute("SELECT count(*) FROM daemon_test_items").fetchone()[0] == 100,
        5,
        "the abandoned batch to roll back",
    )
    assert conn.execute("SELECT count(*) FROM daemon_test_runs").fetchone()[0] == 0
