"""The pool report against real sessions held in each state on a real PostgreSQL."""

from __future__ import annotations

import io
import json
import time
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql

from pgops.config import PoolReportSettings, Settings, load_settings
from pgops.errors import EXIT_CRITICAL, EXIT_OK, EXIT_WARNING
from pgops.pool_report import open_connection
from pgops.pool_report.analyze import Report, analyze
from pgops.pool_report.leaks import (
    IDLE_IN_TRANSACTION,
    LONG_QUERY,
    LONG_TRANSACTION,
    WAITING_ON_LOCK,
    XMIN_HORIZON,
    Problem,
)
from pgops.pool_report.sample import take_sample
from tests.helpers import wait_until

FAST = PoolReportSettings(
    idle_in_transaction=timedelta(milliseconds=300),
    long_transaction=timedelta(milliseconds=300),
    long_query=timedelta(milliseconds=300),
    xmin_age=3,
)
FAST_ENV = {
    "PGOPS_POOL_REPORT_IDLE_IN_TRANSACTION": "300ms",
    "PGOPS_POOL_REPORT_LONG_TRANSACTION": "300ms",
    "PGOPS_POOL_REPORT_LONG_QUERY": "300ms",
    "PGOPS_POOL_REPORT_XMIN_AGE": "3",
}
RELAXED_ENV = {
    "PGOPS_POOL_REPORT_IDLE_IN_TRANSACTION": "1h",
    "PGOPS_POOL_REPORT_LONG_TRANSACTION": "1h",
    "PGOPS_POOL_REPORT_LONG_QUERY": "1h",
    "PGOPS_POOL_REPORT_XMIN_AGE": "1000000",
}


def problem(report: Report, kind: str, pid: int) -> Problem:
    found = [p for p in report.problems if p.kind == kind and p.pid == pid]
    assert len(found) == 1, f"{kind} for pid {pid} not in {[(p.kind, p.pid) for p in report.problems]}"
    return found[0]


def state_of(conn: psycopg.Connection, pid: int) -> tuple[str | None, str | None]:
    row = conn.execute("SELECT state, wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return (row[0], row[1]) if row else (None, None)


@pytest.fixture
def leaking(dsn, conn, sessions):
    """Four sessions in the states a leak shows: idle in transaction holding a row lock, a session blocked on
    that lock, a long pg_sleep, and a REPEATABLE READ snapshot holding the xmin horizon back."""
    conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
    conn.execute("INSERT INTO accounts VALUES (1, 100)")
    started = time.monotonic()
    holder = sessions.open(dsn, autocommit=False, application_name="holder")
    holder.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 1")
    snapshot = sessions.open(dsn, autocommit=False, application_name="reporting")
    snapshot.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    snapshot.execute("SELECT count(*) FROM accounts")
    for _ in range(5):  # consume transaction ids so the snapshot's xmin ages
        conn.execute("SELECT pg_current_xact_id()")
    waiter = sessions.open(dsn, application_name="waiter")
    sessions.run_in_background(waiter, "UPDATE accounts SET balance = balance + 1 WHERE id = 1")
    sleeper = sessions.open(dsn, application_name="sleeper")
    sessions.run_in_background(sleeper, "SELECT pg_sleep(30)")
    wait_until(lambda: state_of(conn, waiter.info.backend_pid) == ("active", "Lock"))
    wait_until(lambda: state_of(conn, sleeper.info.backend_pid)[0] == "active")
    time.sleep(0.5)  # past every threshold of FAST
    return {
        "holder": holder.info.backend_pid,
        "snapshot": snapshot.info.backend_pid,
        "waiter": waiter.info.backend_pid,
        "sleeper": sleeper.info.backend_pid,
        "started": started,
    }


@pytest.mark.timing
def test_report_finds_each_leak_with_pid_age_and_blocker(conn, leaking):
    sample = take_sample(conn)
    report = analyze(sample, FAST)
    elapsed = time.monotonic() - leaking["started"]

    assert conn.info.backend_pid not in {b.pid for b in sample.backends}  # its own session is left out
    holder = problem(report, IDLE_IN_TRANSACTION, leaking["holder"])
    assert 0.5 <= holder.age_seconds <= elapsed + 0.5
    assert f"pids [{leaking['waiter']}]" in holder.detail  # the blocker says whom it blocks
    assert holder.terminate == f"SELECT pg_terminate_backend({leaking['holder']});"
    assert holder.query == "UPDATE accounts SET balance = balance - ? WHERE id = ?"  # constants masked

    waiter = problem(report, WAITING_ON_LOCK, leaking["waiter"])
    assert waiter.blocked_by == (leaking["holder"],)
    assert f"pid {leaking['holder']} (" in waiter.detail and "holder" in waiter.detail
    assert 0.5 <= waiter.age_seconds <= elapsed + 0.5

    sleeper = problem(report, LONG_QUERY, leaking["sleeper"])
    assert 0.5 <= sleeper.age_seconds <= elapsed + 0.5
    assert sleeper.query == "SELECT pg_sleep(?)"

    horizon = problem(report, XMIN_HORIZON, leaking["snapshot"])
    held_back = {b.pid: b.xmin_age for b in sample.backends}[leaking["snapshot"]]
    assert held_back >= 5 and f"xmin {held_back} transactions old" in horizon.detail
    assert "vacuum" in horizon.detail
    problem(report, LONG_TRANSACTION, leaking["snapshot"])
    problem(report, LONG_TRANSACTION, leaking["holder"])

    holder_group = next(g for g in report.groups if g.application == "holder")
    assert holder_group.worst is not None and holder_group.worst.pid == leaking["holder"]
    assert report.states["idle in transaction"] >= 2 and report.states["active"] >= 2
    assert report.status == EXIT_WARNING


def test_relaxed_thresholds_list_the_lock_wait_but_report_ok(conn, leaking):
    relaxed = PoolReportSettings(
        idle_in_transaction=timedelta(hours=1),
        long_transaction=timedelta(hours=1),
        long_query=timedelta(hours=1),
        xmin_age=1_000_000,
    )
    report = analyze(take_sample(conn), relaxed)
    assert [(p.kind, p.pid, p.level) for p in report.problems] == [(WAITING_ON_LOCK, leaking["waiter"], EXIT_OK)]
    assert report.status == EXIT_OK


def test_exit_code_follows_thresholds(cli, dsn, leaking, monkeypatch):
    for name, value in FAST_ENV.items():
        monkeypatch.setenv(name, value)
    result = cli("--dsn", dsn, "pool-report", "--format", "json")
    assert result.exit_code == EXIT_WARNING, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "warning"
    assert {(p["kind"], p["pid"]) for p in data["problems"]} >= {
        (IDLE_IN_TRANSACTION, leaking["holder"]),
        (WAITING_ON_LOCK, leaking["waiter"]),
        (LONG_QUERY, leaking["sleeper"]),
        (XMIN_HORIZON, leaking["snapshot"]),
    }
    holder = next(p for p in data["problems"] if p["pid"] == leaking["holder"])
    assert holder["query"] == "UPDATE accounts SET balance = balance - ? WHERE id = ?"
    shown = json.loads(cli("--dsn", dsn, "pool-report", "--format", "json", "--show-queries").stdout)
    holder = next(p for p in shown["problems"] if p["pid"] == leaking["holder"])
    assert holder["query"] == "UPDATE accounts SET balance = balance - 1 WHERE id = 1"

    for name, value in RELAXED_ENV.items():
        monkeypatch.setenv(name, value)
    assert cli("--dsn", dsn, "pool-report", "--format", "json").exit_code == EXIT_OK
    monkeypatch.setenv("PGOPS_POOL_REPORT_WARNING", "0.0")  # any connection at all is a warning now
    monkeypatch.setenv("PGOPS_POOL_REPORT_CRITICAL", "0.001")
    table = cli("--dsn", dsn, "pool-report")
    assert table.exit_code == EXIT_CRITICAL
    assert "CRITICAL" in table.stdout and "max_connections" in table.stdout


@pytest.mark.timing
def test_terminate_idle_in_transaction_ends_only_old_enough_sessions(cli, conn, dsn, sessions, monkeypatch):
    old = sessions.open(dsn, autocommit=False, application_name="leaky")
    old.execute("SELECT 1")
    time.sleep(0.6)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    refused = cli("--dsn", dsn, "pool-report", "--terminate-idle-in-transaction-over", "500ms")
    assert refused.exit_code == 3 and "--yes" in refused.stderr
    assert state_of(conn, old.info.backend_pid)[0] == "idle in transaction"  # nothing was done

    declined = io.StringIO("n\n")
    declined.isatty = lambda: True
    monkeypatch.setattr("sys.stdin", declined)
    kept = cli("--dsn", dsn, "pool-report", "--terminate-idle-in-transaction-over", "500ms")
    assert "nothing was terminated" in kept.stderr
    assert state_of(conn, old.info.backend_pid)[0] == "idle in transaction"

    fresh = sessions.open(dsn, autocommit=False, application_name="busy")  # under the threshold
    fresh.execute("SELECT 1")
    result = cli(
        "--dsn", dsn, "pool-report", "--terminate-idle-in-transaction-over", "500ms", "--yes", "--format", "json"
    )  # fmt: skip
    assert f"pid {old.info.backend_pid}: terminated" in result.stderr
    (ended,) = json.loads(result.stdout)["terminated"]
    assert (ended["pid"], ended["application"], ended["terminated"]) == (old.info.backend_pid, "leaky", True)
    wait_until(lambda: state_of(conn, old.info.backend_pid) == (None, None))
    assert state_of(conn, fresh.info.backend_pid)[0] == "idle in transaction"
    with pytest.raises(psycopg.OperationalError):
        old.execute("SELECT 1")


def test_saturation_with_role_and_database_limits(cli, pg_server, dbname, dsn, conn, sessions, make_role):
    role = make_role(connection_limit=3)
    conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 5").format(sql.Identifier(dbname)))
    for _ in range(3):
        sessions.open(pg_server.database_dsn(dbname, user=role), application_name="limited")
    sessions.open(dsn, application_name="admin")  # a superuser: never refused, but counted by the database limit
    with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
        psycopg.connect(pg_server.database_dsn(dbname, user=role)).close()  # the limit is real

    report = analyze(take_sample(conn), PoolReportSettings())
    usage = {(u.kind, u.name): u for u in report.limits}
    assert (usage[("role", role)].used, usage[("role", role)].limit, usage[("role", role)].left) == (3, 3, 0)
    assert usage[("role", role)].level == EXIT_CRITICAL
    database = usage[("database", dbname)]
    assert (database.used, database.limit, database.left, database.ratio) == (4, 5, 1, 0.8)
    assert database.level == EXIT_WARNING
    # reserved_connections (16+: slots for pg_use_reserved_connections; pgops' sandbox keeps 2) is not usable either
    max_connections, reserved = conn.execute(
        "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
        " + coalesce((SELECT setting::int FROM pg_settings WHERE name = 'reserved_connections'), 0)"
    ).fetchone()
    if pg_server.version_num >= 160000 and pg_server.sandbox_dir is not None:
        assert take_sample(conn).server.reserved_connections == 2
    server = usage[("server", "max_connections")]
    clients = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    ).fetchone()[0]
    assert (server.used, server.limit) == (clients, max_connections - reserved)
    assert report.status == EXIT_CRITICAL

    result = cli("--dsn", dsn, "pool-report", "--format", "json")
    assert result.exit_code == EXIT_CRITICAL
    limits = {(u["kind"], u["name"]): u for u in json.loads(result.stdout)["limits"]}
    # the fixture connection the library call left out as its own is an ordinary session to the CLI
    assert limits[("role", role)]["left"] == 0 and limits[("database", dbname)]["used"] == 5


def test_database_limit_counts_superuser_sessions_as_postgresql_does(pg_server, dbname, dsn, conn, sessions, make_role):
    role = make_role()
    conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 3").format(sql.Identifier(dbname)))
    for _ in range(2):
        sessions.open(dsn, application_name="admin")
    (database,) = [u for u in analyze(take_sample(conn), PoolReportSettings()).limits if u.kind == "database"]
    assert (database.used, database.left) == (2, 1)
    # PostgreSQL agrees once pgops' own session (left out of the report) is counted: 2 + it + the new one > 3
    with pytest.raises(psycopg.OperationalError, match="too many connections for database"):
        psycopg.connect(pg_server.database_dsn(dbname, user=role)).close()


def test_without_pg_monitor_it_says_what_it_cannot_see(cli, pg_server, dbname, dsn, sessions, make_role):
    hidden = sessions.open(dsn, autocommit=False, application_name="secret")
    hidden.execute("SELECT 'card 4111'")
    time.sleep(0.4)
    role = make_role()
    settings = Settings(pool_report=FAST)
    with open_connection(pg_server.database_dsn(dbname, user=role), settings) as watcher:
        sample = take_sample(watcher)
        report = analyze(sample, FAST)
        seen = {b.pid: b for b in sample.backends}
        assert seen[hidden.info.backend_pid].hidden and seen[hidden.info.backend_pid].state is None
        assert report.hidden_sessions >= 1
        assert report.visibility is not None and f"GRANT pg_monitor TO {role}" in report.visibility
        assert not any(p.pid == hidden.info.backend_pid for p in report.problems)  # can't tell: says so
        view = cli("--dsn", pg_server.database_dsn(dbname, user=role), "pool-report")
        assert view.exit_code == EXIT_OK and f"GRANT pg_monitor TO {role}" in " ".join(view.stdout.split())

        with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(role)))
        report = analyze(take_sample(watcher), FAST)
        assert report.visibility is None and report.hidden_sessions == 0
        found = problem(report, IDLE_IN_TRANSACTION, hidden.info.backend_pid)
        assert found.query == "SELECT ?"


def test_report_connection_reads_the_servers_idle_timeout_not_its_own(pg_server, dbname):
    settings = load_settings(env={})
    with open_connection(pg_server.database_dsn(dbname), settings) as conn:
        sample = take_sample(conn)
        own = conn.execute("SHOW application_name").fetchone()[0]
        timeout = conn.execute("SHOW statement_timeout").fetchone()[0]
    assert sample.server.idle_in_transaction_session_timeout_ms == 0  # the sandbox's default, not pgops' 60s
    assert own == "pgops" and timeout == "5s"
    assert "idle_in_transaction_session_timeout is unset" in analyze(sample, settings.pool_report).recommendations[0]


def test_watch_samples_again_each_interval(cli, dsn, sessions):
    sessions.open(dsn, application_name="watched")
    result = cli("--dsn", dsn, "pool-report", "--format", "json", "--watch", "0.2", "--count", "2")
    assert result.exit_code == EXIT_OK, result.stderr
    documents, text, decoder = [], result.stdout.strip(), json.JSONDecoder()
    while text:  # one JSON document per sample, one after the other
        document, end = decoder.raw_decode(text)
        documents.append(document)
        text = text[end:].strip()
    assert len(documents) == 2 and documents[0]["sampled_at"] < documents[1]["sampled_at"]
    assert all(any(g["application"] == "watched" for g in d["groups"]) for d in documents)
    table = cli("--dsn", dsn, "pool-report", "--watch", "0.1", "--count", "2")
    assert table.exit_code == EXIT_OK and "watched" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--watch", "1", "--terminate-idle-in-transaction-over", "1m"], "can't be combined with --watch"),
        (["--count", "2"], "--count needs --watch"),
        (["--terminate-idle-in-transaction-over", "soon", "--yes"], "expected a duration"),
    ],
)
def test_bad_options_are_one_line_errors(cli, dsn, args, message):
    result = cli("--dsn", dsn, "pool-report", *args)
    assert result.exit_code == 3 and message in result.stderr and "Traceback" not in result.stderr


def test_a_timeout_set_by_the_sampling_session_reads_as_unknown(dsn):
    with psycopg.connect(dsn, autocommit=True, options="-c idle_in_transaction_session_timeout=60000") as conn:
        sample = take_sample(conn)
    assert sample.server.idle_in_transaction_session_timeout_ms is None
    assert sample.server.idle_session_timeout_ms == 0
    assert not any("idle_in_transaction_session_timeout" in a for a in analyze(sample, FAST).recommendations)


def test_unreachable_server_is_one_line_error_without_the_password(cli):
    result = cli("--dsn", "postgresql://watcher:s3cret@127.0.0.1:1/app", "pool-report")
    assert result.exit_code == 3
    assert result.stderr.startswith("pgops: error: can't connect to 127.0.0.1:1/app as watcher")
    assert "s3cret" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
