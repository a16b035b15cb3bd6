"""The built-in jobs through the daemon, on the demo application: refresh, cleanup, pool sampling, index advice.

These need the other jobs' modules; each test skips while one is missing from the tree.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from pgops import demo
from pgops.config import DaemonSettings, load_settings
from pgops.daemon.jobs import JobContext, default_jobs, load_jobs
from pgops.daemon.main import Daemon
from pgops.errors import PgopsError
from tests.daemon.conftest import ROOT, free_port, wait_for

BUILTIN_MODULES = ("pgops.refresh.process", "pgops.cleanup.runner", "pgops.pool_report.export", "pgops.advisor.run")


def require(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module, reason=f"{module} is not in this tree yet")


def demo_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "pgops.toml"
    path.write_text(
        '[refresh]\ndebounce = "0s"\n'
        '[cleanup]\nready_made = ["sessions"]\n'
        f'[advisor]\nmin_calls = 1\noutput = "{tmp_path / "advice.sql"}"\n'
        f"{extra}"
    )
    return path


def expired_sessions(conn) -> int:
    return conn.execute("SELECT count(*) FROM sessions WHERE expires_at < now()").fetchone()[0]


def test_once_runs_every_builtin_job_on_the_demo(cli, migrated_dsn, conn, tmp_path):
    require(*BUILTIN_MODULES)
    demo.load_schema(conn)
    demo.generate(conn, scale=0.01, seed=0.5)
    config = demo_config(tmp_path)
    watched = cli("--config", config, "--dsn", migrated_dsn, "refresh", "watch", "fund_stats")
    assert watched.exit_code == 0, watched.stderr
    conn.execute("INSERT INTO fund_trades (fund_id, amount) SELECT fund_id, 1 FROM fund_trades LIMIT 1")
    assert expired_sessions(conn) > 0

    result = cli("--config", config, "--dsn", migrated_dsn, "daemon", "--once", "--format", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    outcomes = {run["job"]: run for run in json.loads(result.stdout)}
    assert set(outcomes) == {"refresh", "cleanup:sessions", "pool-sample", "advisor"}
    assert all(run["outcome"] == "ok" for run in outcomes.values()), outcomes
    assert "refreshed" in outcomes["refresh"]["detail"]
    assert expired_sessions(conn) == 0
    assert (
        (tmp_path / "advice.sql")
        .read_text()
        .startswith("SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n-- pgops")
    )
    assert any(metric.name.startswith("pgops_pool") for metric in REGISTRY.collect())


@pytest.mark.timing
def test_sigterm_during_a_real_cleanup_keeps_committed_batches(migrated_dsn, conn, tmp_path):
    """SIGTERM while `pgops daemon --once` deletes in small batches: exit 0 within 10 s, every deleted row
    belongs to a batch the cleanup reported (each committed), and the expired rows left were not touched."""
    require("pgops.cleanup.runner")
    demo.load_schema(conn)
    conn.execute(
        "INSERT INTO sessions (user_id, data, created_at, last_seen_at, expires_at) "
        "SELECT g, '{}', now() - interval '2 days', now() - interval '2 days', now() - interval '1 day' "
        "FROM generate_series(1, 3000) g"
    )
    config = demo_config(
        tmp_path,
        '[cleanup.policies.sessions]\ntable = "sessions"\nexpired_column = "expires_at"\nbatch_size = 10\n'
        'target_batch_duration = "1ms"\npause = "200ms"\n[daemon]\njobs = ["cleanup"]\n',
    )
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgops", "--config", str(config), "--dsn", migrated_dsn, "daemon", "--once"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        wait_for(lambda: expired_sessions(conn) <= 2980, 30, "a few committed batches")
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert proc.wait(15) == 0, log_path.read_text()
        assert time.monotonic() - signalled < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = expired_sessions(conn)
    assert 0 < left < 3000
    reported = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    runs = [entry for entry in reported if entry.get("policy") == "sessions" and "rows" in entry]
    assert runs and runs[-1]["status"] == "stopped", reported
    assert runs[-1]["rows"] == 3000 - left  # nothing deleted outside a committed, counted batch


def test_pool_sample_keeps_state_across_runs_and_feeds_metrics(migrated_dsn, conn, tmp_path):
    """Three samples while an application's idle connections grow: the daemon's sampler, kept between runs,
    reports that application on /metrics (a fresh sampler per run never could)."""
    require("pgops.pool_report.export")
    settings = load_settings(env={}, dsn=migrated_dsn)
    settings = dataclasses.replace(settings, daemon=DaemonSettings(jobs=["pool-sample"]))
    daemon = Daemon(settings, load_jobs(settings))
    application = f"leaky-{uuid.uuid4().hex[:8]}"
    leaked: list[psycopg.Connection] = []
    try:
        daemon.connect()
        (job,) = daemon.jobs
        for _ in range(settings.pool_report.idle_growth_samples):
            leaked.append(psycopg.connect(migrated_dsn, application_name=application, autocommit=True))
            result = daemon.runner.run(job)
            assert result.outcome.value == "ok", result
            assert result.detail.startswith("pool ")
        growing = REGISTRY.get_sample_value(
            "pgops_pool_idle_growing_connections", {"target": "default", "application": application}
        )
        assert growing == len(leaked)
        assert REGISTRY.get_sample_value("pgops_pool_status", {"target": "default"}) is not None
    finally:
        daemon.close()
        for leak in leaked:
            leak.close()


def test_advisor_job_writes_the_script_atomically(cli, migrated_dsn, conn, tmp_path):
    require("pgops.advisor.run")
    demo.load_schema(conn)
    demo.generate(conn, scale=0.01, seed=0.5)
    # As `pgops demo` does: the loader's bulk INSERTs are not the application's workload.
    conn.execute(
        "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)"
    )
    demo.run_workload(migrated_dsn, statements=300, seed=3)
    output = tmp_path / "advice" / "indexes.sql"  # a folder that does not exist yet
    config = tmp_path / "pgops.toml"
    config.write_text(f'[advisor]\nmin_calls = 1\noutput = "{output}"\n[daemon]\njobs = ["advisor"]\n')
    result = cli("--config", config, "--dsn", migrated_dsn, "daemon", "--once", "--format", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    (run,) = json.loads(result.stdout)
    assert run["job"] == "advisor" and run["outcome"] == "ok", run
    assert run["detail"].endswith(f"script written to {output}")
    script = output.read_text()
    assert script.startswith("SET client_encoding") and "\n-- pgops advise-indexes" in script
    assert "CREATE INDEX" in script  # the demo misses indexes on purpose
    assert [p.name for p in output.parent.iterdir()] == ["indexes.sql"]  # no temporary file left behind


@pytest.mark.timing
def test_advisor_child_process_stops_and_fails_cleanly(dsn, conn):
    """The advisor runs in a child process: a stop ends it at once, and its failure comes back as one line."""
    require("pgops.advisor.run")
    settings = dataclasses.replace(load_settings(env={}, dsn=dsn), daemon=DaemonSettings(jobs=["advisor"]))
    (job,) = default_jobs(settings)
    started = time.monotonic()
    assert job.run(JobContext("advisor", dsn, settings, conn, lambda: True)) == "stopped before the advice was ready"
    assert time.monotonic() - started < 5
    assert multiprocessing.active_children() == []
    unreachable = f"postgresql://pgops:s3cret@127.0.0.1:{free_port()}/app"
    with pytest.raises(PgopsError) as failure:
        job.run(JobContext("advisor", unreachable, settings, conn, lambda: False))
    assert "can't connect" in failure.value.message and "s3cret" not in failure.value.message
    assert multiprocessing.active_children() == []
