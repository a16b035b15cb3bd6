"""Processing against a real PostgreSQL: debounce, max-wait, stale flag and marks, failures and back-off,
timeouts, locking, and the metrics."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import sql

from pgops import migrate
from pgops.refresh import process, queue, watch
from tests.refresh.conftest import FAST, differs_from_query, settings_for


def _view(conn, name="public.fund_stats") -> queue.WatchedView:
    return next(v for v in queue.watched_views(conn) if v.name == name)


def _marks(conn) -> int:
    return conn.execute("SELECT count(*) FROM pgops.refresh_marks").fetchone()[0]


def _trade(dsn: str, amount: int = 1) -> None:
    with psycopg.connect(dsn, autocommit=True) as writer:
        writer.execute("INSERT INTO trades (fund_id, amount) VALUES (1, %s)", (amount,))


def _process_until(conn, settings, done, timeout: float) -> list[process.RefreshOutcome]:
    """Run the processor every refresh.interval until `done(outcomes)` or the timeout."""
    outcomes: list[process.RefreshOutcome] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcomes += process.process_due(conn, settings.refresh)
        if done(outcomes):
            break
        time.sleep(settings.refresh.interval.total_seconds())
    return outcomes


def _refreshed(outcomes) -> bool:
    return any(o.outcome == process.REFRESHED for o in outcomes)


@pytest.mark.timing
def test_debounce_waits_for_quiet_then_refreshes(conn, dsn, fund_stats, settings):
    watch.watch(
        conn, fund_stats, replace(settings.refresh, debounce=timedelta(seconds=1), max_wait=timedelta(seconds=5))
    )
    process.refresh_now(conn, fund_stats, settings.refresh)
    _trade(dsn, 1000)
    first_write = time.monotonic()
    assert differs_from_query(conn, fund_stats) > 0

    outcomes = _process_until(conn, settings, _refreshed, timeout=4)
    refreshed_after = time.monotonic() - first_write

    assert _refreshed(outcomes)
    assert 1.0 <= refreshed_after < 2.5
    assert [o.outcome for o in outcomes[:-1]] and {o.outcome for o in outcomes[:-1]} == {"waiting"}
    assert differs_from_query(conn, fund_stats) == 0
    assert _view(conn).stale_since is None


@pytest.mark.timing
def test_max_wait_refreshes_under_continuous_writes(conn, dsn, fund_stats, settings):
    """Writes every 0.2 s never leave a 2 s quiet spell, so only max_wait (3 s) can trigger the refresh."""
    watch.watch(
        conn, fund_stats, replace(settings.refresh, debounce=timedelta(seconds=2), max_wait=timedelta(seconds=3))
    )
    process.refresh_now(conn, fund_stats, settings.refresh)
    stop = threading.Event()

    def write_continuously() -> None:
        with psycopg.connect(dsn, autocommit=True) as writer:
            while not stop.wait(0.2):
                writer.execute("INSERT INTO trades (fund_id, amount) VALUES (2, 1)")

    writer = threading.Thread(target=write_continuously)
    writer.start()
    try:
        time.sleep(0.1)
        started = time.monotonic()
        outcomes = _process_until(conn, settings, _refreshed, timeout=6)
        refreshed_after = time.monotonic() - started
    finally:
        stop.set()
        writer.join()
    assert _refreshed(outcomes)
    assert 2.8 <= refreshed_after < 4.5


def test_writers_mark_once_per_transaction_and_not_while_a_refresh_is_pending(conn, dsn, fund_stats, settings):
    watch.watch(
        conn, fund_stats, replace(settings.refresh, debounce=timedelta(seconds=30), max_wait=timedelta(minutes=5))
    )
    process.refresh_now(conn, fund_stats, settings.refresh)  # clean: the flag tells writers to mark
    with psycopg.connect(dsn) as writer:
        writer.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 1)")
        writer.execute("UPDATE trades SET amount = amount + 1 WHERE fund_id = 2")
        writer.execute("DELETE FROM funds WHERE id = 5")
        writer.commit()
    assert _marks(conn) == 1

    assert [o.outcome for o in process.process_due(conn, settings.refresh)] == ["waiting"]  # folds, sets the flag
    assert _marks(conn) == 0
    _trade(dsn)
    with psycopg.connect(dsn, autocommit=True) as writer:
        writer.execute("TRUNCATE trades")
    assert _marks(conn) == 0  # a refresh is pending: nothing to write
    assert _view(conn).stale_since is not None

    process.refresh_now(conn, fund_stats, settings.refresh)
    assert differs_from_query(conn, fund_stats) == 0
    _trade(dsn)
    assert _marks(conn) == 1  # clean again: the next write marks


def test_rolled_back_savepoint_takes_its_mark_along(conn, dsn, fund_stats, settings):
    watch.watch(conn, fund_stats, settings.refresh)
    process.refresh_now(conn, fund_stats, settings.refresh)
    with psycopg.connect(dsn) as writer:
        with pytest.raises(psycopg.errors.DivisionByZero), writer.transaction():
            writer.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 1)")
            writer.execute("SELECT 1 / 0")
        writer.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 2)")  # marks again: the first was undone
        writer.commit()
    assert _marks(conn) == 1


@pytest.mark.timing
def test_a_skipped_writer_still_in_progress_is_waited_for(conn, dsn, fund_stats, settings):
    """A writer that skipped its mark (refresh pending) and commits while the refresh waits is included."""
    watch.watch(conn, fund_stats, replace(settings.refresh, debounce=timedelta(0), max_wait=timedelta(0)))
    with psycopg.connect(dsn) as writer:
        writer.execute("INSERT INTO trades (fund_id, amount) VALUES (3, 777)")
        assert _marks(conn) == 0  # skipped: the view is stale since watch

        committer = threading.Timer(0.5, writer.commit)
        committer.start()
        started = time.monotonic()
        outcome = process.refresh_now(conn, fund_stats, settings.refresh)
        committer.join()
    assert outcome.outcome == process.REFRESHED
    assert time.monotonic() - started >= 0.45
    assert differs_from_query(conn, fund_stats) == 0


def test_a_writer_that_stays_open_postpones_the_refresh_without_losing_it(conn, dsn, fund_stats, settings):
    short = dataclasses.replace(settings.refresh, lock_timeout=timedelta(milliseconds=300))
    watch.watch(conn, fund_stats, replace(short, debounce=timedelta(0), max_wait=timedelta(0)))
    with psycopg.connect(dsn) as writer:
        writer.execute("INSERT INTO trades (fund_id, amount) VALUES (3, 555)")
        outcome = process.process_due(conn, short)[0]
        assert outcome.outcome == process.BUSY and "did not finish" in outcome.error
        assert conn.execute("SELECT pgops.is_pending(1)").fetchone()[0]
        writer.commit()
    assert [o.outcome for o in process.process_due(conn, short)] == ["refreshed"]
    assert differs_from_query(conn, fund_stats) == 0


def test_failed_refresh_is_recorded_backed_off_retried_and_does_not_hold_up_others(conn, dsn, fund_stats, settings):
    conn.execute("CREATE TABLE control (fail boolean NOT NULL)")
    conn.execute("INSERT INTO control VALUES (true)")
    conn.execute(
        "CREATE MATERIALIZED VIEW fragile AS SELECT fund_id, trades / (SELECT CASE WHEN fail THEN 0 ELSE 1 END "
        "FROM control) AS trades FROM fund_stats WITH NO DATA"
    )
    conn.execute("CREATE UNIQUE INDEX ON fragile (fund_id)")
    watch.watch(conn, "fragile", replace(settings.refresh, debounce=timedelta(0), max_wait=timedelta(seconds=1)))
    watch.watch(conn, fund_stats, replace(settings.refresh, debounce=timedelta(0), max_wait=timedelta(seconds=1)))

    first = {o.view: o for o in process.process_due(conn, settings.refresh)}
    assert first["public.fund_stats"].outcome == process.REFRESHED  # refreshed first: fragile reads it
    assert first["public.fragile"].outcome == process.FAILED
    assert "division by zero" in first["public.fragile"].error
    failing = _view(conn, "public.fragile")
    assert failing.failure_count == 1 and "division by zero" in failing.last_error
    assert failing.next_attempt_at > failing.now and failing.stale_since is not None
    assert queue.status_exit_code(queue.watched_views(conn), settings.refresh.interval) == 2

    _trade(dsn)
    second = {o.view: o.outcome for o in process.process_due(conn, settings.refresh)}
    assert second == {"public.fund_stats": "refreshed", "public.fragile": "waiting"}  # backing off

    conn.execute("UPDATE control SET fail = false")
    outcomes = _process_until(
        conn, settings, lambda out: any(o.view == "public.fragile" for o in out if o.outcome == "refreshed"), 4
    )
    assert any(o.view == "public.fragile" and o.outcome == process.REFRESHED for o in outcomes)
    recovered = _view(conn, "public.fragile")
    assert recovered.failure_count == 0 and recovered.last_error is None and recovered.populated
    assert differs_from_query(conn, "public.fragile") == 0


@pytest.mark.timing
def test_statement_timeout_ends_a_slow_refresh_and_records_it(conn, fund_stats, settings):
    conn.execute("CREATE MATERIALIZED VIEW slow AS SELECT 1 AS k, pg_sleep(1) IS NULL AS slept FROM funds LIMIT 1")
    watch.watch(conn, "slow", replace(settings.refresh, debounce=timedelta(0)), concurrently=False)
    quick = dataclasses.replace(settings.refresh, statement_timeout=timedelta(milliseconds=300))
    started = time.monotonic()
    outcome = process.refresh_now(conn, "slow", quick)
    assert outcome.outcome == process.FAILED and "statement timeout" in outcome.error
    assert time.monotonic() - started < 1
    assert _view(conn, "public.slow").failure_count == 1


def test_one_refresh_of_a_view_at_a_time(conn, dsn, fund_stats, settings):
    view = watch.watch(conn, fund_stats, replace(settings.refresh, debounce=timedelta(0)))
    with psycopg.connect(dsn) as other:
        other.execute("SELECT pg_advisory_xact_lock(hashtext('pgops.refresh'), %s)", (view.view_id,))
        assert [o.outcome for o in process.process_due(conn, settings.refresh)] == ["busy"]
        threading.Timer(0.3, other.commit).start()
        assert process.refresh_now(conn, fund_stats, settings.refresh).outcome == process.REFRESHED


def test_never_populated_view_gets_a_plain_first_refresh(conn, installed):
    conn.execute("CREATE TABLE t (id integer PRIMARY KEY)")
    conn.execute("CREATE MATERIALIZED VIEW t_ids AS SELECT id FROM t WITH NO DATA")
    conn.execute("CREATE UNIQUE INDEX ON t_ids (id)")
    watch.watch(conn, "t_ids", replace(installed.refresh, debounce=timedelta(0)))
    first = process.process_due(conn, installed.refresh)
    assert [(o.outcome, o.concurrent) for o in first] == [("refreshed", False)]
    conn.execute("INSERT INTO t VALUES (1)")
    again = process.refresh_now(conn, "t_ids", installed.refresh)
    assert (again.outcome, again.concurrent) == ("refreshed", True)
    view = _view(conn, "public.t_ids")
    assert view.last_plain_duration is not None and view.last_concurrent_duration is not None


def test_metrics_exist_for_every_watched_view_and_count_refreshes(conn, fund_stats, settings):
    watch.watch(conn, fund_stats, replace(settings.refresh, debounce=timedelta(0)))
    view = {"target": "default", "view": "public.fund_stats"}  # commands label their target "default"
    labels = {**view, "outcome": "success"}
    before = REGISTRY.get_sample_value("pgops_refreshes_total", labels) or 0
    process.update_view_metrics(queue.watched_views(conn))
    assert REGISTRY.get_sample_value("pgops_refreshes_total", {**labels, "outcome": "failure"}) is not None
    assert REGISTRY.get_sample_value("pgops_refresh_stale_seconds", view) > 0
    process.process_due(conn, settings.refresh)
    assert REGISTRY.get_sample_value("pgops_refreshes_total", labels) == before + 1
    assert REGISTRY.get_sample_value("pgops_refresh_stale_seconds", view) == 0
    assert REGISTRY.get_sample_value("pgops_refresh_last_success_timestamp_seconds", view) > 0
    assert REGISTRY.get_sample_value("pgops_refresh_duration_seconds_count", view) >= 1


def test_a_forced_refresh_that_times_out_on_a_clean_view_keeps_writers_marking(conn, dsn, fund_stats, settings):
    """`refresh now` of a clean view gives up waiting for an open writer, which then rolls back: the flag must
    stay clear, or later writers would skip their marks with no refresh pending."""
    short = dataclasses.replace(settings.refresh, lock_timeout=timedelta(milliseconds=300))
    watch.watch(conn, fund_stats, replace(short, debounce=timedelta(0), max_wait=timedelta(0)))
    process.refresh_now(conn, fund_stats, short)
    with psycopg.connect(dsn) as writer:
        writer.execute("INSERT INTO trades (fund_id, amount) VALUES (4, 1)")
        assert process.refresh_now(conn, fund_stats, short).outcome == process.BUSY
        writer.rollback()
    _trade(dsn, 4242)
    assert [o.outcome for o in process.process_due(conn, short)] == ["refreshed"]
    assert differs_from_query(conn, fund_stats) == 0


def test_a_writer_session_runs_the_trigger_function_the_processor_left_it(conn, dsn, fund_stats, settings):
    """The flag is the trigger function's body: a session that has run the pending body marks in its next
    transaction once the processor has lowered the flag, and stops marking once it is raised again."""
    watch.watch(
        conn, fund_stats, replace(settings.refresh, debounce=timedelta(seconds=30), max_wait=timedelta(minutes=5))
    )
    with psycopg.connect(dsn, autocommit=True) as writer:
        writer.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 1)")  # pending from the start
        assert _marks(conn) == 0
        process.refresh_now(conn, fund_stats, settings.refresh)  # lowers the flag, refreshes
        writer.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 2)")
        assert _marks(conn) == 1
        assert [o.outcome for o in process.process_due(conn, settings.refresh)] == ["waiting"]  # raises it
        writer.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 3)")
        assert _marks(conn) == 0


def _trigger_states(conn) -> dict[str, str]:
    """Table → its pgops trigger's pg_trigger.tgenabled ('O' enabled, 'D' disabled)."""
    rows = conn.execute(
        "SELECT t.tgrelid::regclass::text, t.tgenabled::text FROM pg_trigger t "
        "JOIN pg_proc p ON p.oid = t.tgfoid WHERE p.pronamespace = 'pgops'::regnamespace ORDER BY 1"
    ).fetchall()
    return dict(rows)


def test_a_pending_refresh_disables_the_triggers_and_lowering_it_enables_them(conn, dsn, fund_stats, settings):
    """While a refresh is pending the processor disables the view's triggers (writers call no trigger function),
    and enables them again before the refresh, so the writes after it mark."""
    watch.watch(
        conn, fund_stats, replace(settings.refresh, debounce=timedelta(seconds=30), max_wait=timedelta(minutes=5))
    )
    process.refresh_now(conn, fund_stats, settings.refresh)
    assert _trigger_states(conn) == {"funds": "O", "trades": "O"}
    _trade(dsn)
    assert [o.outcome for o in process.process_due(conn, settings.refresh)] == ["waiting"]
    assert _trigger_states(conn) == {"funds": "D", "trades": "D"}
    assert conn.execute("SELECT pgops.is_pending(1)").fetchone()[0]
    _trade(dsn, 31)
    assert _marks(conn) == 0 and differs_from_query(conn, fund_stats) > 0

    assert process.refresh_now(conn, fund_stats, settings.refresh).outcome == process.REFRESHED
    assert _trigger_states(conn) == {"funds": "O", "trades": "O"}
    assert differs_from_query(conn, fund_stats) == 0
    _trade(dsn, 32)
    assert _marks(conn) == 1


def test_an_open_writer_keeps_the_triggers_enabled_without_holding_up_the_processor(conn, dsn, fund_stats, settings):
    """Disabling waits for the table's writers only a moment: with one still open, the empty body stands in for
    the pending flag and the next run disables the triggers. Enabling them waits for a writer that skipped."""
    watch.watch(
        conn, fund_stats, replace(settings.refresh, debounce=timedelta(seconds=30), max_wait=timedelta(minutes=5))
    )
    with psycopg.connect(dsn) as writer:
        writer.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 1)")
        started = time.monotonic()
        assert [o.outcome for o in process.process_due(conn, settings.refresh)] == ["waiting"]
        assert time.monotonic() - started < settings.refresh.lock_timeout.total_seconds() / 2
        assert _trigger_states(conn) == {"funds": "O", "trades": "O"}  # all of a view's tables, or none
        assert conn.execute("SELECT pgops.is_pending(1)").fetchone()[0]
        writer.commit()
    assert [o.outcome for o in process.process_due(conn, settings.refresh)] == ["waiting"]
    assert _trigger_states(conn) == {"funds": "D", "trades": "D"}

    with psycopg.connect(dsn) as writer:
        writer.execute("INSERT INTO trades (fund_id, amount) VALUES (3, 888)")  # no trigger call, no mark
        committer = threading.Timer(0.5, writer.commit)
        committer.start()
        started = time.monotonic()
        outcome = process.refresh_now(conn, fund_stats, settings.refresh)
        committer.join()
    assert outcome.outcome == process.REFRESHED and time.monotonic() - started >= 0.45
    assert differs_from_query(conn, fund_stats) == 0


def test_a_role_that_may_not_alter_the_tables_keeps_the_empty_body(conn, pg_server, dbname):
    """A role with the TRIGGER privilege on a table it does not own (enough to watch a view it owns over that
    table; it runs pgops' migration, as the README asks) can't disable triggers: the pending body alone is the
    flag there, and nothing is lost."""
    suffix = uuid.uuid4().hex[:8]
    owner, ops = f"pgops_tables_{suffix}", f"pgops_views_{suffix}"
    for role in (owner, ops):
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)))
    conn.execute("CREATE TABLE t (id integer PRIMARY KEY, n integer NOT NULL)")
    conn.execute(sql.SQL("ALTER TABLE t OWNER TO {}").format(sql.Identifier(owner)))
    conn.execute(sql.SQL("GRANT SELECT, TRIGGER ON t TO {}").format(sql.Identifier(ops)))
    conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(ops)))
    conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(dbname), sql.Identifier(ops)))
    ops_dsn = pg_server.database_dsn(dbname, user=ops, password="pw")
    try:
        migrate.upgrade(ops_dsn, settings_for(ops_dsn))
        with psycopg.connect(ops_dsn, autocommit=True) as as_ops:
            as_ops.execute("CREATE MATERIALIZED VIEW t_sum AS SELECT 1 AS k, coalesce(sum(n), 0) AS n FROM t")
            as_ops.execute("CREATE UNIQUE INDEX ON t_sum (k)")
            slow = dataclasses.replace(FAST, debounce=timedelta(seconds=30))
            watch.watch(as_ops, "t_sum", replace(slow, max_wait=timedelta(minutes=5)))
            assert process.refresh_now(as_ops, "t_sum", slow).outcome == process.REFRESHED
            conn.execute("INSERT INTO t VALUES (1, 5)")
            assert [o.outcome for o in process.process_due(as_ops, slow)] == ["waiting"]
            assert _trigger_states(conn) == {"t": "O"}
            conn.execute("INSERT INTO t VALUES (2, 6)")  # skips its mark: the body is the empty one
            assert _marks(conn) == 0
            assert process.refresh_now(as_ops, "t_sum", slow).outcome == process.REFRESHED
            assert differs_from_query(conn, "public.t_sum") == 0
    finally:
        conn.execute("DROP TABLE t CASCADE")  # the view reads it, the trigger calls ops' function
        for role in (ops, owner):
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_plain_refresh_on_request_records_what_it_costs_next_to_the_concurrent_one(cli, conn, dsn, fund_stats):
    assert cli("--dsn", dsn, "refresh", "watch", fund_stats, "--format", "json").exit_code == 0
    concurrent = cli("--dsn", dsn, "refresh", "now", fund_stats, "--format", "json")
    plain = cli("--dsn", dsn, "refresh", "now", fund_stats, "--plain", "--format", "json")
    assert json.loads(concurrent.stdout)["concurrent"] is True
    assert json.loads(plain.stdout)["concurrent"] is False
    (row,) = json.loads(cli("--dsn", dsn, "refresh", "status", "--format", "json").stdout)
    assert row["refresh_concurrently"] is True  # the setting is unchanged
    assert row["last_plain_duration"] > 0 and row["last_concurrent_duration"] > 0
    assert row["plain_is_cheaper"] == (row["last_concurrent_duration"] > row["last_plain_duration"])
