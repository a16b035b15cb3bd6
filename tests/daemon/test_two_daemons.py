"""Two daemons on one database: each job runs once per schedule period, never in both at once."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from pgops.daemon.jobs import load_jobs
from pgops.daemon.main import Daemon
from tests.daemon.conftest import daemon_settings, wait_for
from tests.daemon.sample_jobs import LEDGER_DDL

JOBS = ("tick", "slow")
DEADLINE = 20  # seconds: the jobs run every second, so three runs each take about three


def turned_away(job: str, before: dict[tuple[str, str], float]) -> float:
    """Runs of `job` the daemons turned away (the run lock or the period's claim) since `before`."""
    return sum(runs_counted(job, outcome) - before[job, outcome] for outcome in ("locked", "done"))


@pytest.mark.timing
def test_two_daemons_share_the_work_without_overlap(migrated_dsn, conn, monkeypatch):
    conn.execute(LEDGER_DDL)
    monkeypatch.setenv("PGOPS_TEST_SLOW_SECONDS", "0.3")
    settings = daemon_settings(migrated_dsn, "ledger_jobs")
    before_counts = {(job, outcome): runs_counted(job, outcome) for job in JOBS for outcome in ("locked", "done")}

    def both_competed_three_times() -> bool:
        ran = dict(conn.execute("SELECT job, count(*) FROM daemon_test_runs GROUP BY job").fetchall())
        return all(ran.get(job, 0) >= 3 and turned_away(job, before_counts) >= 2 for job in JOBS)

    daemons = [Daemon(settings, load_jobs(settings)), Daemon(settings, load_jobs(settings))]
    try:
        for daemon in daemons:
            daemon.start(listen=None)
        wait_for(both_competed_three_times, DEADLINE, "three runs of each job, the other daemon turned away twice")
    finally:
        for daemon in daemons:
            assert daemon.stop()
    runs = conn.execute(
        "SELECT job, started_at, finished_at, date_trunc('second', started_at) AS period "
        "FROM daemon_test_runs ORDER BY job, started_at"
    ).fetchall()
    for job in JOBS:
        mine = [run for run in runs if run[0] == job]
        periods = [run[3] for run in mine]
        assert len(mine) >= 3, f"{job} ran {len(mine)} times"
        assert len(periods) == len(set(periods)), f"{job} ran twice in one period: {periods}"
        for before, after in itertools.pairwise(mine):
            assert before[2] <= after[1], f"{job} ran in both daemons at once: {before} / {after}"
        assert max(b - a for a, b in itertools.pairwise(periods)) <= timedelta(seconds=2), "a period was lost"
        # the other daemon did fire in those periods, and was turned away by the run lock or the claim
        assert turned_away(job, before_counts) >= 2, f"{job}: the second daemon never competed"


def runs_counted(job: str, outcome: str) -> float:
    labels = {"target": "default", "job": job, "outcome": outcome}
    return REGISTRY.get_sample_value("pgops_daemon_job_runs_total", labels) or 0.0


@pytest.mark.timing
def test_a_dead_daemons_job_is_taken_over(migrated_dsn, conn, start_daemon, monkeypatch):
    """A daemon killed in the middle of a run (its sessions end) leaves the job to the other one at once."""
    conn.execute(LEDGER_DDL)
    conn.execute("CREATE TABLE daemon_test_items (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false)")
    conn.execute("INSERT INTO daemon_test_items SELECT generate_series(1, 10)")
    env = {"PGOPS_TEST_HOLD_SECONDS": "60", "PGOPS_TEST_RUNNER": "a"}
    first = start_daemon(migrated_dsn, "hold_jobs", env=env)

    def first_holds_the_lock() -> bool:
        return (
            conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND a.application_name = 'pgops' AND a.state = 'idle in transaction'"
            ).fetchone()[0]
            > 0
        )

    wait_for(first_holds_the_lock, 30, "the first daemon to run the hold job")
    monkeypatch.setenv("PGOPS_TEST_HOLD_SECONDS", "0")
    monkeypatch.setenv("PGOPS_TEST_RUNNER", "b")
    settings = daemon_settings(migrated_dsn, "hold_jobs")
    second = Daemon(settings, load_jobs(settings))
    second.start(listen=None)
    try:
        time.sleep(2)
        assert conn.execute("SELECT count(*) FROM daemon_test_runs").fetchone()[0] == 0  # locked out while a runs
        first.proc.kill()
        first.proc.wait(10)
        killed_at = time.monotonic()
        wait_for(lambda: conn.execute("SELECT count(*) FROM daemon_test_runs").fetchone()[0], 10, "a takeover")
        assert time.monotonic() - killed_at < 5
    finally:
        assert second.stop()
    runners = {row[0] for row in conn.execute("SELECT runner FROM daemon_test_runs")}
    assert runners == {"b"}  # a's run died with its session: its transaction rolled back, nothing recorded
    assert conn.execute("SELECT count(*) FROM daemon_test_items").fetchone()[0] == 0  # b's run did the work
