"""`pgops refresh schedule`: pgops' pg_cron job set, changed and removed by a command (which `pgops migrate`
runs), one error line when pg_cron can't be used; and the one processor both pg_cron and Python call."""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql

from pgops.cli.refresh import every_schedule
from pgops.errors import PgopsError
from pgops.refresh import process, queue, watch
from tests.refresh.conftest import FAST, differs_from_query


def _jobs(pg_server, dbname: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(pg_server.cron_dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT jobname, schedule, command FROM cron.job WHERE jobname LIKE %s ORDER BY jobname",
            (f"%:{dbname}",),
        ).fetchall()


def _pg_cron_version(pg_server) -> tuple[int, ...]:
    with psycopg.connect(pg_server.cron_dsn) as conn:
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]
    return tuple(int(part) for part in version.split("-")[0].split("."))


@pytest.mark.parametrize(
    ("every", "schedule"),
    [
        ("30s", "30 seconds"),
        ("1m", "* * * * *"),
        ("5m", "*/5 * * * *"),
        ("1h", "0 * * * *"),
        ("6h", "0 */6 * * *"),
        ("24h", "0 0 * * *"),
    ],
)
def test_every_is_a_pg_cron_schedule(every, schedule):
    assert every_schedule(every) == schedule


@pytest.mark.parametrize("every", ["7m", "90s", "0s", "5h", "2d", "soon"])
def test_every_that_pg_cron_cant_run_is_refused(every):
    with pytest.raises(PgopsError, match=r"^--every: "):
        every_schedule(every)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "5m", "--off"], "refresh schedule: give one of --every, --cron or --off"),
        (["--every", "5m", "--cron", "* * * * *"], "refresh schedule: give one of --every, --cron or --off"),
        (["--every", "7m"], "--every: pg_cron can't run every 7m"),
        (["--cron", "61 * * * *"], "--cron: "),
        (["--cron", ""], "--cron: empty schedule"),
    ],
)
def test_bad_options_are_one_line_before_connecting(cli, args, message):
    result = cli("--dsn", "postgresql://nobody@127.0.0.1:1/none", "refresh", "schedule", *args)
    assert result.exit_code == 3
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"pgops: error: {message}"), result.stderr


@pytest.mark.needs_pg_cron
def test_schedule_sets_changes_and_removes_the_job(pg_server, dbname, dsn, installed, cli):
    job = f"pgops-refresh:{dbname}"
    # pgops before 0004 also scheduled a history job: the one owner of that trimming is the cleanup policy now
    with psycopg.connect(pg_server.cron_dsn, autocommit=True) as cron_conn:
        cron_conn.execute("SELECT cron.schedule(%s, '*/10 * * * *', 'SELECT 1')", (f"pgops-refresh-history:{dbname}",))
    try:
        first = cli("--dsn", dsn, "refresh", "schedule", "--every", "5m")
        assert first.exit_code == 0, first.stderr
        assert first.stderr.strip() == f"pg_cron job {job} scheduled (*/5 * * * *) in {pg_server.cron_database}"
        assert _jobs(pg_server, dbname) == [(job, "*/5 * * * *", "CALL pgops.process_due('5 seconds')")]

        again = cli("--dsn", dsn, "refresh", "schedule", "--cron", "0 * * * *")
        assert again.exit_code == 0, again.stderr
        assert [j[:2] for j in _jobs(pg_server, dbname)] == [(job, "0 * * * *")]  # the same job, changed

        off = cli("--dsn", dsn, "refresh", "schedule", "--off")
        assert off.exit_code == 0 and "removed 1 pg_cron job(s)" in off.stderr, off.stderr
        assert _jobs(pg_server, dbname) == []
        assert cli("--dsn", dsn, "refresh", "schedule", "--off").exit_code == 0  # nothing left: no error

        seconds = cli("--dsn", dsn, "refresh", "schedule", "--every", "30s")
        if _pg_cron_version(pg_server) >= (1, 5):
            assert seconds.exit_code == 0, seconds.stderr
            assert [j[:2] for j in _jobs(pg_server, dbname)] == [(job, "30 seconds")]
        else:
            assert seconds.exit_code == 3
            (line,) = seconds.stderr.strip().splitlines()
            assert line.startswith("pgops: error: refresh schedule: pg_cron refused '30 seconds' (schedules in "), line
            assert _jobs(pg_server, dbname) == []
    finally:
        cli("--dsn", dsn, "refresh", "schedule", "--off")


def test_schedule_without_a_usable_pg_cron_is_one_line_naming_what_is_missing(pg_server, dbname, conn, cli):
    """On a server without pg_cron, the real thing; with pg_cron, an ordinary role that may not use it."""
    role = f"pgops_app_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)))
    role_dsn = pg_server.database_dsn(dbname, user=role, password="pw")
    try:
        for args in ([], ["--every", "5m"], ["--off"]):
            result = cli("--dsn", role_dsn, "refresh", "schedule", *args)
            assert result.exit_code == 3, result.stderr
            (line,) = result.stderr.strip().splitlines()
            if "pg_cron" in pg_server.extensions:
                assert "may not" in line and role in line, line
            else:
                assert "pg_cron is not loaded" in line, line
    finally:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_procedure_pg_cron_calls_refreshes_whatever_the_sessions_isolation(conn, dsn, fund_stats):
    """pg_cron's `CALL pgops.process_due()` goes through process_view(), which runs each attempt READ COMMITTED:
    under a default of SERIALIZABLE the procedure's own loop (before 0004) failed every run."""
    watch.watch(conn, fund_stats, dataclasses.replace(FAST, debounce=timedelta(0), max_wait=timedelta(0)))
    conn.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 1000)")
    with psycopg.connect(dsn, autocommit=True) as job:
        job.execute("SET default_transaction_isolation = 'serializable'")
        job.execute("CALL pgops.process_due('2 seconds')")
    (view,) = queue.watched_views(conn)
    assert view.refresh_count == 1 and view.stale_since is None
    assert differs_from_query(conn, fund_stats) == 0


@pytest.mark.timing
def test_both_processors_bound_a_view_by_the_statement_that_calls_process_view(conn, dsn, fund_stats):
    """The daemon's path applies [refresh] statement_timeout to each view's CALL and gives the session its own
    back; pg_cron's CALL is bounded by its session's statement_timeout, and the procedure records the timeout as
    the view's failure instead of failing the run."""
    conn.execute("CREATE MATERIALIZED VIEW slow AS SELECT 1 AS k, pg_sleep(1) IS NULL AS slept FROM funds LIMIT 1")
    quick = dataclasses.replace(FAST, debounce=timedelta(0), max_wait=timedelta(0))
    watch.watch(conn, "slow", quick, concurrently=False)
    conn.execute("SET statement_timeout = '55s'")
    started = time.monotonic()
    outcome = process.refresh_now(conn, "slow", dataclasses.replace(quick, statement_timeout=timedelta(seconds=0.3)))
    assert outcome.outcome == process.FAILED and "statement timeout" in outcome.error
    assert time.monotonic() - started < 1
    assert conn.execute("SHOW statement_timeout").fetchone()[0] == "55s"

    with psycopg.connect(dsn, autocommit=True) as job:
        job.execute("UPDATE pgops.refresh_views SET next_attempt_at = NULL")
        job.execute("SET statement_timeout = '300ms'")
        job.execute("CALL pgops.process_due('2 seconds')")  # no error: the run goes on after the timed-out view
    failures = {v.name: v.failure_count for v in queue.watched_views(conn)}
    assert failures["public.slow"] == 2


@pytest.mark.parametrize("lock_timeout", [timedelta(milliseconds=1.5), timedelta(seconds=5), timedelta(days=20)])
def test_the_job_command_gives_the_lock_timeout_as_postgresql_reads_it(conn, lock_timeout):
    """The command's interval is exact and never in exponent form: `2.16e+06 seconds` is not an interval."""
    from pgops.refresh.cron import process_command

    command = process_command(dataclasses.replace(FAST, lock_timeout=lock_timeout))
    literal = command.removeprefix("CALL pgops.process_due(").removesuffix(")")
    read = conn.execute(f"SELECT {literal}::interval").fetchone()[0]
    assert abs(read - lock_timeout) < timedelta(milliseconds=1)


@pytest.mark.needs_pg_cron
def test_migrate_schedules_a_new_install_and_keeps_a_schedule_set_since(pg_server, dbname, dsn, cli):
    job = f"pgops-refresh:{dbname}"
    try:
        fresh = cli("--dsn", dsn, "migrate")
        assert fresh.exit_code == 0, fresh.stderr
        assert [j[0] for j in _jobs(pg_server, dbname)] == [job]
        changed = cli("--dsn", dsn, "refresh", "schedule", "--every", "30m")
        assert changed.exit_code == 0, changed.stderr
        again = cli("--dsn", dsn, "migrate")  # already at head: the schedule set above stands
        assert again.exit_code == 0, again.stderr
        assert [j[:2] for j in _jobs(pg_server, dbname)] == [(job, "*/30 * * * *")]
        assert cli("--dsn", dsn, "refresh", "schedule", "--off").exit_code == 0
        assert cli("--dsn", dsn, "migrate").exit_code == 0
        assert _jobs(pg_server, dbname) == []  # removed on purpose: migrate doesn't bring it back
    finally:
        cli("--dsn", dsn, "refresh", "schedule", "--off")
