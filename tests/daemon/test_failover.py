"""The daemon across a failover, on a real primary and a real streaming replica (the sandbox's `--replicas 1`).

Refresh and cleanup write, so they run on a primary only: on a standby they pause (one log line, gauges) and
resume when the server takes writes; on a two-host URL with `target_session_attrs=read-write` they follow the
promoted replica. Each test has its own sandbox: promoting a replica is for good.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from pgops import migrate
from pgops.config import load_settings
from pgops.daemon.guard import run_lock_key
from pgops.daemon.jobs import load_jobs
from pgops.daemon.main import Daemon
from pgops.refresh.watch import watch
from pgops.sandbox import Sandbox, recreate_database
from tests.conftest import replicated_sandbox
from tests.daemon.conftest import free_port, http_get, wait_for

APP = "failover_app"
RESUME_WITHIN = 30  # seconds from the promotion to refresh and cleanup done on the new primary
EXPIRED_BEFORE, EXPIRED_DURING, LIVE = 40, 30, 5
CONFIG = """
[refresh]
interval = "0.5s"
debounce = "0s"
cron_schedule = ""
[cleanup]
ready_made = []
[cleanup.policies.tokens]
table = "tokens"
expired_column = "expires_at"
batch_size = 10
"""
SCHEMA = """
CREATE TABLE trades (id bigserial PRIMARY KEY, amount int NOT NULL);
CREATE MATERIALIZED VIEW trade_totals AS SELECT count(*) AS trades, coalesce(sum(amount), 0) AS total FROM trades;
CREATE TABLE tokens (id bigserial PRIMARY KEY, expires_at timestamptz NOT NULL);
CREATE INDEX ON tokens (expires_at);
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Sandbox]:
    """A primary and one streaming replica of this test's own, pgops migrated in APP with the test's view and
    table."""
    with replicated_sandbox(1) as box:
        url = recreate_database(box.url(), APP)
        (tmp_path / "pgops.toml").write_text(CONFIG)
        settings = load_settings(tmp_path / "pgops.toml", env={}, dsn=url)
        migrate.upgrade(url, settings)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA)
            watch(conn, "trade_totals", settings.refresh, concurrently=False)
            add_tokens(conn, expired=0, live=LIVE)
        yield box


def add_tokens(conn: psycopg.Connection, *, expired: int, live: int = 0) -> None:
    conn.execute(
        "INSERT INTO tokens (expires_at) SELECT now() - interval '1 hour' FROM generate_series(1, %s) "
        "UNION ALL SELECT now() + interval '1 day' FROM generate_series(1, %s)",
        (expired, live),
    )


def app_state(url: str) -> tuple[int, int, int, int]:
    """(trades in the view, their total, expired tokens, live tokens) on the server at `url`."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        trades, total = conn.execute("SELECT trades, total FROM trade_totals").fetchone()
        expired, live = conn.execute(
            "SELECT count(*) FILTER (WHERE expires_at < now()), count(*) FILTER (WHERE expires_at >= now()) FROM tokens"
        ).fetchone()
    return trades, total, expired, live


def wait_replayed(box: Sandbox) -> None:
    """Replication is asynchronous: wait until the replica replayed everything the primary wrote so far."""
    with psycopg.connect(box.url(), autocommit=True) as conn:
        # the insert position: with synchronous_commit = off the write position can still be before a commit
        written = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    with psycopg.connect(box.url(replica=1), autocommit=True) as conn:  # its postgres database: APP may be to come
        wait_for(
            lambda: conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (written,)).fetchone()[0],
            30,
            "the replica to replay the primary's writes",
        )


def stop_primary(box: Sandbox) -> None:
    """Stop the primary alone (`Sandbox.stop` stops its replicas too), as a crashed or fenced primary."""
    box._pg_ctl(Path(box._state().bindir), "-m", "fast", "-w", "-t", "60", "stop")


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def rows_deleted() -> float:
    labels = {"target": "default", "policy": "tokens"}
    return REGISTRY.get_sample_value("pgops_cleanup_rows_deleted_total", labels) or 0.0


def target_health(base: str) -> dict:
    status, body = http_get(f"{base}/healthz")
    assert status == 200, body
    [target] = json.loads(body)["targets"]
    return target


def test_refresh_and_cleanup_follow_the_promoted_replica_and_lose_nothing(cluster, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pgops")
    primary, replica = cluster.url(APP), cluster.url(APP, replica=1)
    old, new = port_of(primary), port_of(replica)
    dsn = f"host=127.0.0.1,127.0.0.1 port={old},{new} dbname={APP} user=postgres target_session_attrs=read-write"
    settings = load_settings(tmp_path / "pgops.toml", env={}, dsn=dsn)
    only = {"jobs": [], "plugins": ["tests.daemon.sample_jobs:writing_jobs"], "health_interval": timedelta(seconds=0.5)}
    settings = replace(settings, daemon=replace(settings.daemon, **only))
    deleted_at_start = rows_deleted()

    def deleted() -> float:
        return rows_deleted() - deleted_at_start

    daemon = Daemon(settings, load_jobs(settings))
    port = free_port()
    daemon.start(listen=f"127.0.0.1:{port}")
    watcher = threading.Thread(target=daemon.watch)
    watcher.start()
    base = f"http://127.0.0.1:{port}"
    try:
        # on the first primary: a write refreshed, expired rows deleted
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("INSERT INTO trades (amount) VALUES (1)")
            add_tokens(conn, expired=EXPIRED_BEFORE)
        wait_for(lambda: app_state(primary) == (1, 1, 0, LIVE), 30, "refresh and cleanup on the first primary")
        wait_for(lambda: deleted() >= EXPIRED_BEFORE, 10, "the cleanup's last batch counted")  # counted after commit
        assert deleted() == EXPIRED_BEFORE
        first = target_health(base)
        assert (first["server"], first["role"], first["switched_at"]) == (f"127.0.0.1:{old}", "primary", None)

        # work the daemon can't do on the first primary: its run locks are taken there, as by another daemon
        holder = psycopg.connect(primary, autocommit=True)
        holder.execute(
            "SELECT pg_advisory_lock(%s), pg_advisory_lock(%s)",
            (run_lock_key("refresh"), run_lock_key("cleanup:tokens")),
        )
        holder.execute("INSERT INTO trades (amount) VALUES (10)")
        add_tokens(holder, expired=EXPIRED_DURING)
        wait_replayed(cluster)
        assert app_state(primary) == (1, 1, EXPIRED_DURING, LIVE)  # still to do: a refresh and a cleanup

        stop_primary(cluster)
        holder.close()
        cluster.promote(1)  # what `pgops sandbox promote` runs (the CLI in process would replace caplog's handler)
        promoted_at = time.monotonic()

        # on the new primary: the write refreshed (no refresh lost) and the expired rows deleted, each counted once
        wait_for(
            lambda: app_state(replica) == (2, 11, 0, LIVE), RESUME_WITHIN, "refresh and cleanup on the new primary"
        )
        resumed = time.monotonic() - promoted_at
        wait_for(lambda: deleted() >= EXPIRED_BEFORE + EXPIRED_DURING, 10, "the new primary's batches counted")
        with psycopg.connect(replica, autocommit=True) as conn:
            conn.execute("INSERT INTO trades (amount) VALUES (100)")
        wait_for(lambda: app_state(replica)[:2] == (3, 111), 10, "a later write refreshed on the new primary")

        # /healthz reports the switch
        now = wait_for(lambda: (h := target_health(base))["server"] == f"127.0.0.1:{new}" and h, 10, "the switch")
        assert now["role"] == "primary" and now["previous_server"] == f"127.0.0.1:{old}"
        assert now["switched_at"] is not None and now["paused_jobs"] == []
        # one line for the switch (it may find the replica still a standby, then a second line says it is primary)
        switches = [r.getMessage() for r in caplog.records if f"now on 127.0.0.1:{new} (" in r.getMessage()]
        assert len(switches) == 1 and switches[0].endswith(f"was on 127.0.0.1:{old} (primary)")
        assert deleted() == EXPIRED_BEFORE + EXPIRED_DURING  # each expired row counted once, across both servers
        print(f"\nrefresh and cleanup done on the new primary {resumed:.1f}s after its promotion")
    finally:
        assert daemon.stop()
        watcher.join(5)


def metric(base: str, name: str, labels: dict[str, str]) -> float | None:
    """A sample of the daemon's /metrics; None while it does not answer yet (a daemon process takes a moment)."""
    try:
        text = http_get(f"{base}/metrics")[1]
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_on_a_standby_refresh_and_cleanup_pause_then_resume_when_it_is_promoted(cluster, start_daemon):
    primary, replica = cluster.url(APP), cluster.url(APP, replica=1)
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("INSERT INTO trades (amount) VALUES (7)")
        add_tokens(conn, expired=EXPIRED_DURING)
    wait_replayed(cluster)

    daemon = start_daemon(replica, "writing_jobs", tables=CONFIG)  # the standby's own URL: one host, any role
    base = daemon.base_url
    default = {"target": "default"}
    runs = {**default, "job": "refresh", "outcome": "paused"}
    wait_for(lambda: (metric(base, "pgops_daemon_job_runs_total", runs) or 0) >= 4, 30, "refresh paused 4 times")
    assert metric(base, "pgops_target_writable", default) == 0
    assert metric(base, "pgops_daemon_paused_jobs", default) == 2
    health = target_health(base)
    assert (health["role"], health["paused_jobs"]) == ("standby", ["cleanup:tokens", "refresh"])
    paused = [line for line in daemon.log() if " paused: " in str(line["msg"])]
    assert sorted(line["job"] for line in paused) == ["cleanup:tokens", "refresh"]  # one line each, not per run
    assert all(line["level"] == "warning" and line["role"] == "standby" for line in paused)
    assert app_state(replica) == (0, 0, EXPIRED_DURING, LIVE)

    cluster.promote(1)  # what `pgops sandbox promote` runs
    wait_for(lambda: app_state(replica) == (1, 7, 0, LIVE), RESUME_WITHIN, "refresh and cleanup after the promotion")
    wait_for(lambda: metric(base, "pgops_daemon_paused_jobs", default) == 0, 10, "no paused jobs")
    assert metric(base, "pgops_target_writable", default) == 1
    resumed = [line for line in daemon.log() if " resumed on " in str(line["msg"])]
    assert sorted(line["job"] for line in resumed) == ["cleanup:tokens", "refresh"]
    health = target_health(base)
    assert (health["role"], health["paused_jobs"], health["switched_at"]) == ("primary", [], None)  # same server
    daemon.terminate()
    assert daemon.proc.wait(20) == 0
