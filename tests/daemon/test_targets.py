"""One daemon for several targets (`[targets.NAME] url = ...`): each target's jobs, its own locks, a `target` label
on the metrics, and each target in /healthz."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from pgops import migrate
from pgops.config import Target, load_settings
from pgops.daemon.guard import run_lock_key, slot_key
from pgops.daemon.jobs import Every
from pgops.daemon.main import Daemon, target_settings
from pgops.daemon.scheduler import make_trigger, period_end
from tests.conftest import PgServer, create_database, drop_database
from tests.daemon.conftest import free_port, http_get, wait_for
from tests.daemon.sample_jobs import INTERVAL, LEDGER_DDL

TARGETS = ("alpha", "beta")


@pytest.fixture
def two_databases(pg_server: PgServer) -> Iterator[dict[str, str]]:
    """Two databases of the test server, pgops migrated and the ledger table in each: target name → URL."""
    names = {target: create_database(pg_server, f"pgops_target_{target}") for target in TARGETS}
    try:
        urls = {target: pg_server.database_dsn(name) for target, name in names.items()}
        for url in urls.values():
            migrate.upgrade(url, load_settings(env={}, dsn=url))
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(LEDGER_DDL)
        yield urls
    finally:
        for name in names.values():
            drop_database(pg_server, name)


def test_advisory_lock_keys_are_per_database(two_databases):
    """The same job's run lock and slot claim in two databases of one server: both are granted, because
    PostgreSQL scopes advisory locks to the database, so targets that share a server never block each other."""
    alpha, beta = (psycopg.connect(two_databases[t], autocommit=True) for t in TARGETS)
    with alpha, beta:
        keys = (run_lock_key("tick"), slot_key("tick", period_end(make_trigger(Every(INTERVAL)), datetime.now(UTC))))
        for key in keys:
            assert alpha.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
            assert beta.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        databases = beta.execute(
            "SELECT count(DISTINCT database) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        ).fetchone()[0]
        assert databases == 2


def runs(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM daemon_test_runs WHERE job = 'tick'").fetchone()[0]


def test_one_daemon_runs_every_targets_jobs_under_their_own_locks(two_databases, tmp_path: Path):
    config = tmp_path / "pgops.toml"
    config.write_text(
        '[daemon]\njobs = []\nplugins = ["tests.daemon.sample_jobs:ledger_jobs"]\nhealth_interval = "0.5s"\n'
        + "".join(f"[targets.{name}]\nurl = {json.dumps(url)}\n" for name, url in two_databases.items())
    )
    settings = load_settings(config, env={})
    daemon = Daemon(settings)
    assert [target.name for target in daemon.targets] == list(TARGETS)
    port = free_port()
    daemon.start(listen=f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    try:
        # every period, each target's tick runs in its own database: no target's claim stops the other's run
        wait_for(lambda: all(runs(url) >= 3 for url in two_databases.values()), 30, "3 ticks in each database")
        status, body = http_get(f"{base}/healthz")
        assert status == 200, body
        health = json.loads(body)
        assert [(t["name"], t["role"], t["database_ok"]) for t in health["targets"]] == [
            ("alpha", "primary", True),
            ("beta", "primary", True),
        ]
        text = http_get(f"{base}/metrics")[1]
        for name in TARGETS:
            assert f'pgops_daemon_job_runs_total{{job="tick",outcome="ok",target="{name}"}}' in text
            assert f'pgops_daemon_job_runs_total{{job="tick",outcome="done",target="{name}"}} 0.0' in text
            assert f'pgops_daemon_job_runs_total{{job="tick",outcome="locked",target="{name}"}} 0.0' in text
            assert f'pgops_daemon_database_up{{target="{name}"}} 1.0' in text
        assert {runner_id for target in daemon.targets for runner_id in map(target.runner.job_id, target.jobs)} == {
            "alpha/tick", "alpha/slow", "beta/tick", "beta/slow"
        }  # fmt: skip
    finally:
        assert daemon.stop()


def test_several_targets_write_an_advice_file_each(tmp_path: Path):
    settings = load_settings(env={}, dsn="postgresql://db.example/app")
    advisor = dataclasses.replace(settings.advisor, output=tmp_path / "advice.sql")
    settings = dataclasses.replace(settings, advisor=advisor)
    one = target_settings(settings, Target("default", "postgresql://a/app"), several=False)
    two = target_settings(settings, Target("beta", "postgresql://b/app"), several=True)
    assert (one.dsn, one.advisor.output) == ("postgresql://a/app", tmp_path / "advice.sql")
    assert (two.dsn, two.advisor.output) == ("postgresql://b/app", tmp_path / "advice.beta.sql")


def test_only_the_first_target_reads_the_pgbouncer_console():
    """One console pools one server's clients: counted for every target, its pools would make another server's
    status warning or critical."""
    settings = load_settings(env={}, dsn="postgresql://db.example/app")
    pool_report = dataclasses.replace(settings.pool_report, pgbouncer_url="postgresql://pgbouncer@a:6432/pgbouncer")
    settings = dataclasses.replace(settings, pool_report=pool_report)
    first = target_settings(settings, Target("main", "postgresql://a/app"), several=True)
    other = target_settings(settings, Target("beta", "postgresql://b/app"), several=True, first=False)
    assert first.pool_report.pgbouncer_url == "postgresql://pgbouncer@a:6432/pgbouncer"
    assert other.pool_report.pgbouncer_url is None
