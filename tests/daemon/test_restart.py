"""PostgreSQL stopped under a running daemon and started again: the daemon recovers by itself, /healthz goes 503
and back to 200, and the work queued before the outage is all done afterwards.

The server is this test's own sandbox (stopping the shared test server would break the other tests).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from pgops import migrate
from pgops.config import load_settings
from pgops.daemon.jobs import load_jobs
from pgops.daemon.main import Daemon
from pgops.sandbox import Sandbox
from tests.conftest import sandbox_dir
from tests.daemon.conftest import daemon_settings, free_port, http_get, wait_for
from tests.daemon.sample_jobs import ITEMS_DDL

DRAIN = {"target": "default", "job": "drain"}
ITEMS = 300  # the drain job does 5 items per 0.1 s: about 6 s of work


@pytest.fixture
def own_server() -> Iterator[Sandbox]:
    box = Sandbox(sandbox_dir("daemon-restart-sandbox"))
    url = box.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS daemon_test_items, daemon_test_batches")
        conn.execute(ITEMS_DDL)
    migrate.upgrade(url, load_settings(env={}, dsn=url))
    try:
        yield box
    finally:
        box.stop()


def start_again(box: Sandbox) -> None:
    """Start the stopped server on the SAME port, as a restarted production server would come back.

    (`Sandbox.start` moves to a new port while the old one still has sockets in TIME_WAIT.)
    """
    box._pg_ctl(Path(box._state().bindir), "-l", str(box.logfile), "-w", "-t", "60", "start")


@pytest.mark.timing
def test_daemon_rides_through_a_server_restart(own_server):
    url = own_server.url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO daemon_test_items (id) SELECT generate_series(1, %s)", (ITEMS,))
    retries_before = REGISTRY.get_sample_value("pgops_daemon_job_retries_total", DRAIN) or 0
    settings = daemon_settings(url, "drain_jobs")
    daemon = Daemon(settings, load_jobs(settings))
    port = free_port()
    daemon.start(listen=f"127.0.0.1:{port}")
    healthz = f"http://127.0.0.1:{port}/healthz"
    try:
        assert http_get(healthz)[0] == 200

        def done() -> int:
            with psycopg.connect(url, autocommit=True) as conn:
                return conn.execute("SELECT count(*) FROM daemon_test_items WHERE done").fetchone()[0]

        wait_for(lambda: done() >= 20, 20, "the drain job to start")
        own_server.stop()
        stopped_at = time.monotonic()
        status, body = http_get(healthz)
        assert status == 503, body
        assert json.loads(body)["database_ok"] is False and "database not answering" in json.loads(body)["reason"]
        time.sleep(2)  # long enough for the job to fail its attempts and back off
        assert http_get(healthz)[0] == 503
        start_again(own_server)
        wait_for(lambda: http_get(healthz)[0] == 200, 30, "/healthz back to 200")
        recovered = time.monotonic() - stopped_at
        wait_for(lambda: done() == ITEMS, 30, f"all {ITEMS} items done after the restart")
        status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
        assert 'pgops_daemon_database_up{target="default"} 1.0' in metrics and "pgops_daemon_healthy 1.0" in metrics
        assert recovered < 30
        # the outage did hit the job mid-run: its attempts failed and were retried, and nothing was lost
        assert REGISTRY.get_sample_value("pgops_daemon_job_retries_total", DRAIN) > retries_before
    finally:
        assert daemon.stop()
