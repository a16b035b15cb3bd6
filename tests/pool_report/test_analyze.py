"""The pool report's pure decisions on hand-made samples."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from pgops.config import PoolReportSettings
from pgops.errors import EXIT_CRITICAL, EXIT_OK, EXIT_WARNING, PgopsError
from pgops.pool_report.analyze import analyze, crossings
from pgops.pool_report.export import OTHER, bounded_applications, export_idle_growth, export_metrics
from pgops.pool_report.growth import Growth, IdleGrowth
from pgops.pool_report.leaks import (
    IDLE_IN_TRANSACTION,
    IDLE_POOL_BLOAT,
    LONG_QUERY,
    WAITING_ON_LOCK,
    XMIN_HORIZON,
    mask_query,
    shown_query,
)
from pgops.pool_report.limits import pool_size_for, saturation
from pgops.pool_report.pgbouncer import PgBouncerDatabase, PgBouncerPool, PgBouncerSample
from pgops.pool_report.sample import Backend, Sample, ServerInfo
from pgops.pool_report.terminate import candidates

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SETTINGS = PoolReportSettings()


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def backend(pid: int, state: str | None = "idle", **fields) -> Backend:
    values = {
        "database": "app",
        "user": "web",
        "application": "shop",
        "client": "10.0.0.1",
        "backend_start": ago(600),
        "xact_start": None,
        "query_start": ago(10),
        "state_change": ago(10),
        "wait_event_type": None,
        "wait_event": None,
        "xmin_age": None,
        "query": "SELECT 1",
        **fields,
    }
    return Backend(pid=pid, state=state, **values)


def server(**fields) -> ServerInfo:
    values = {
        "server_version_num": 150000,
        "max_connections": 100,
        "superuser_reserved_connections": 3,
        "reserved_connections": 0,
        "idle_in_transaction_session_timeout_ms": 60000,
        "idle_session_timeout_ms": 0,
        "own_pid": 1,
        "current_user": "monitor",
        "superuser": False,
        "reads_all_stats": True,
        "signals_backends": False,
        "local_cores": 4,
        **fields,
    }
    return ServerInfo(**values)


def sample(backends: list[Backend], **fields) -> Sample:
    return Sample(sampled_at=NOW, server=fields.pop("server", server()), backends=backends, **fields)


def many(count: int, start: int = 100, **fields) -> list[Backend]:
    return [backend(start + i, **fields) for i in range(count)]


@pytest.mark.parametrize(
    ("count", "level"), [(72, EXIT_OK), (73, EXIT_WARNING), (87, EXIT_WARNING), (88, EXIT_CRITICAL)]
)
def test_server_saturation_levels_against_usable_slots(count, level):
    (usage,) = saturation(sample(many(count)), SETTINGS)
    assert usage.limit == 97  # 100 less 3 reserved for superusers
    assert usage.used == count and usage.left == 97 - count
    assert usage.ratio == pytest.approx(count / 97)
    assert usage.level == level


def test_reserved_connections_of_16_are_not_usable():
    (usage,) = saturation(sample([], server=server(reserved_connections=5)), SETTINGS)
    assert usage.limit == 92


def test_database_limits_count_superusers_role_limits_of_superusers_are_not_shown():
    backends = many(3, user="web") + many(2, start=200, user="postgres") + many(1, start=300, database="other")
    limits = {
        (u.kind, u.name): u
        for u in saturation(
            sample(
                backends, database_limits={"app": 6}, role_limits={"web": 4, "postgres": 1}, superusers={"postgres"}
            ),
            SETTINGS,
        )
    }
    assert (limits[("database", "app")].used, limits[("database", "app")].left) == (5, 1)  # superusers count
    assert limits[("database", "app")].level == EXIT_WARNING
    assert limits[("role", "web")].used == 4 and limits[("role", "web")].level == EXIT_CRITICAL  # in any database
    assert ("role", "postgres") not in limits  # not enforced for superusers
    assert limits[("server", "max_connections")].used == 6


def test_report_counts_every_state():
    report = analyze(sample([backend(1, "active"), backend(2, "idle"), backend(3, None, hidden=True)]), SETTINGS)
    assert report.states == {
        "active": 1,
        "idle": 1,
        "idle in transaction": 0,
        "idle in transaction (aborted)": 0,
        "fastpath function call": 0,
        "disabled": 0,
        "hidden": 1,
    }


def test_a_zero_limit_is_full_with_one_session():
    limits = saturation(sample(many(1), role_limits={"web": 0}), SETTINGS)
    role = next(u for u in limits if u.kind == "role")
    assert (role.ratio, role.left, role.level) == (1.0, -1, EXIT_CRITICAL)


def test_configured_thresholds_are_used():
    strict = PoolReportSettings(warning=0.01, critical=0.05)
    assert saturation(sample(many(2)), strict)[0].level == EXIT_WARNING
    assert saturation(sample(many(5)), strict)[0].level == EXIT_CRITICAL


@pytest.mark.parametrize(
    ("query", "masked"),
    [
        ("SELECT * FROM t1 WHERE id = 42 AND name = 'O''Brien'", "SELECT * FROM t1 WHERE id = ? AND name = ?"),
        ("UPDATE a SET x = -1.5e3, y = E'\\n' WHERE z IN (1,2)", "UPDATE a SET x = ?, y = ? WHERE z IN (?,?)"),
        ("SELECT $tag$secret 1$tag$, $$x$$, $1", "SELECT ?, ?, $1"),
        ("SELECT col2 FROM s3.t4", "SELECT col2 FROM s3.t4"),
    ],
)
def test_mask_query_hides_constants_only(query, masked):
    assert mask_query(query) == masked


@given(st.integers(min_value=0), st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 ", max_size=30))
def test_masked_queries_keep_no_literal(number, text):
    masked = mask_query(f"SELECT {number}, '{text}' FROM t WHERE a = {number}")
    assert masked == "SELECT ?, ? FROM t WHERE a = ?"


def test_shown_query_folds_whitespace_truncates_and_can_keep_constants():
    settings = replace(SETTINGS, query_length=20)
    assert shown_query("SELECT  *\n  FROM orders WHERE id = 7", settings) == "SELECT * FROM order…"
    assert shown_query("SELECT 7", replace(SETTINGS, mask_queries=False)) == "SELECT 7"
    assert shown_query(None, SETTINGS) is None


def test_leak_thresholds_and_blockers():
    holder = backend(10, "idle in transaction", xact_start=ago(400), state_change=ago(31), query="UPDATE t SET a=1")
    fresh = backend(11, "idle in transaction", xact_start=ago(29), state_change=ago(29))
    waiter = backend(12, "active", wait_event_type="Lock", wait_event="transactionid", query_start=ago(90),
                     blocked_by=(10,))  # fmt: skip
    short_wait = backend(13, "active", wait_event_type="Lock", wait_event="relation", query_start=ago(5),
                         blocked_by=(10,))  # fmt: skip
    slow = backend(14, "active", query_start=ago(61), xact_start=ago(61))
    idle_old_query = backend(15, "idle", query_start=ago(3600))  # its last query ended: not a long query
    horizon = backend(16, "active", xmin_age=1_000_000, xact_start=ago(20), query_start=ago(1))
    report = analyze(sample([holder, fresh, waiter, short_wait, slow, idle_old_query, horizon]), SETTINGS)
    found = {(p.kind, p.pid): p for p in report.problems}
    assert set(found) == {
        (IDLE_IN_TRANSACTION, 10),
        ("long transaction", 10),
        (WAITING_ON_LOCK, 12),
        (WAITING_ON_LOCK, 13),
        (LONG_QUERY, 12),
        (LONG_QUERY, 14),
        (XMIN_HORIZON, 16),
    }
    assert found[(IDLE_IN_TRANSACTION, 10)].age_seconds == 31
    assert "blocks 2 session(s): pids [12, 13]" in found[(IDLE_IN_TRANSACTION, 10)].detail
    assert found[(WAITING_ON_LOCK, 12)].level == EXIT_WARNING  # waited longer than long_query
    assert found[(WAITING_ON_LOCK, 13)].level == EXIT_OK  # listed, not alarming
    assert "pid 10 (web/shop, idle in transaction)" in found[(WAITING_ON_LOCK, 13)].detail
    assert found[(IDLE_IN_TRANSACTION, 10)].query == "UPDATE t SET a=?"
    assert report.problems[0].level == EXIT_WARNING
    assert report.status == EXIT_WARNING


def test_an_aborted_transaction_left_open_is_idle_in_transaction_too():
    aborted = backend(1, "idle in transaction (aborted)", state_change=ago(45))
    (found,) = analyze(sample([aborted]), SETTINGS).problems
    assert (found.kind, found.age_seconds) == (IDLE_IN_TRANSACTION, 45)
    assert found.detail.startswith("idle in transaction (aborted) for 45.0s")


def test_idle_pool_bloat_needs_many_and_old_sessions():
    settings = replace(SETTINGS, idle_pool_sessions=5, idle_pool_age=timedelta(minutes=30))
    old = [*many(4, backend_start=ago(600)), backend(99, backend_start=ago(3600))]
    (bloat,) = [p for p in analyze(sample(old), settings).problems if p.kind == IDLE_POOL_BLOAT]
    assert bloat.pid == 99 and bloat.age_seconds == 3600 and "5 idle sessions" in bloat.detail
    young = many(5, backend_start=ago(600))
    assert not analyze(sample(young), settings).problems
    few = many(4, backend_start=ago(7200))
    assert not analyze(sample(few), settings).problems


def test_groups_name_the_worst_offender():
    backends = [
        backend(1, "idle in transaction", state_change=ago(40)),
        backend(2, "idle in transaction", state_change=ago(400)),
        backend(3, "idle"),
        backend(4, "active", application="batch", client="10.0.0.2"),
    ]
    groups = analyze(sample(backends), SETTINGS).groups
    assert [(g.application, g.total, g.problems) for g in groups] == [("shop", 3, 2), ("batch", 1, 0)]
    assert groups[0].worst.pid == 2
    assert groups[0].states == {"idle in transaction": 2, "idle": 1}
    assert groups[1].worst is None


def test_recommendations():
    quiet = analyze(sample(many(3)), SETTINGS).recommendations
    assert quiet == []
    unset = server(idle_in_transaction_session_timeout_ms=0, local_cores=2)
    settings = replace(SETTINGS, idle_pool_sessions=10, idle_pool_age=timedelta(0))
    advice = analyze(sample(many(20), server=unset), settings).recommendations
    assert any(a.startswith("idle_in_transaction_session_timeout is unset") for a in advice)
    assert any(a.startswith("idle_session_timeout is unset") for a in advice)
    assert any("20 connections for 2 cores" in a and f"about {pool_size_for(2)} server" in a for a in advice)
    assert any("application 'shop' holds 20 connections, 20 idle: put it behind a pooler" in a for a in advice)
    remote = analyze(sample(many(3), server=server(local_cores=None)), SETTINGS).recommendations
    assert remote == ["server cores unknown: set pool_report.server_cores to get a pool size ((2 x cores) + 1)"]
    configured = replace(SETTINGS, server_cores=1)
    assert "for 1 cores" in analyze(sample(many(7), server=server(local_cores=None)), configured).recommendations[0]


def test_visibility_names_the_grant():
    hidden = [backend(1, None, hidden=True, query="<insufficient privilege>")]
    report = analyze(sample(hidden, server=server(reads_all_stats=False)), SETTINGS)
    assert report.hidden_sessions == 1
    assert report.visibility.endswith("GRANT pg_monitor TO monitor")
    assert report.groups[0].states == {"hidden": 1}


def pgbouncer(cl_waiting: int, servers: int) -> PgBouncerSample:
    return PgBouncerSample(
        pools=[PgBouncerPool("app", "web", 2, cl_waiting, servers, 1.5, "transaction")],
        databases=[PgBouncerDatabase("app", pool_size=4, max_connections=0, current_connections=servers)],
    )


@pytest.mark.parametrize(
    ("waiting", "servers", "level"),
    [(0, 2, EXIT_OK), (1, 2, EXIT_WARNING), (0, 3, EXIT_WARNING), (0, 4, EXIT_CRITICAL)],
)
def test_pgbouncer_pools_against_pool_size(waiting, servers, level):
    report = analyze(sample([]), SETTINGS, pgbouncer(waiting, servers))
    (pool,) = report.pgbouncer
    assert (pool.servers_used, pool.pool_size, pool.ratio, pool.level) == (servers, 4, servers / 4, level)
    assert report.status == level


def test_idle_growth_names_applications_that_grew_at_every_sample():
    tracker = IdleGrowth(samples=3)
    steady = many(3, start=500, application="steady")
    assert tracker.feed(sample(many(1) + steady)) == []
    assert tracker.feed(sample(many(2) + steady)) == []  # not enough samples yet
    (growth,) = tracker.feed(sample(many(4) + steady))
    assert (growth.application, growth.idle_counts) == ("shop", (1, 2, 4))
    assert tracker.feed(sample(many(4) + steady)) == []  # flat at the last step
    with pytest.raises(ValueError):
        IdleGrowth(samples=1)


def test_crossings_log_only_what_got_worse():
    calm = analyze(sample(many(3)), SETTINGS)
    busy = analyze(sample([*many(80), backend(1, "idle in transaction", state_change=ago(60))]), SETTINGS)
    lines = crossings(calm, busy)
    assert lines[0] == "server max_connections: warning at 81/97 connections (84%)"
    assert lines[1].startswith("idle in transaction: pid 1 (web/shop from 10.0.0.1)")
    assert crossings(busy, busy) == []
    assert len(crossings(None, busy)) == 2


def test_terminate_candidates_check_privileges_before_anything():
    mine = backend(1, "idle in transaction", user="monitor", state_change=ago(700))
    theirs = backend(2, "idle in transaction", user="web", state_change=ago(700))
    boss = backend(3, "idle in transaction", user="postgres", state_change=ago(700))
    recent = backend(4, "idle in transaction", user="web", state_change=ago(5))
    over = timedelta(minutes=10)
    assert [b.pid for b in candidates(sample([mine, recent]), over)] == [1]
    with pytest.raises(PgopsError, match=re.escape("GRANT pg_signal_backend TO monitor; nothing was terminated")):
        candidates(sample([mine, theirs]), over)
    allowed = server(signals_backends=True)
    assert [b.pid for b in candidates(sample([mine, theirs], server=allowed), over)] == [1, 2]
    with pytest.raises(PgopsError, match="only a superuser can"):
        candidates(sample([theirs, boss], server=allowed, superusers={"postgres"}), over)
    root = server(superuser=True)
    assert [b.pid for b in candidates(sample([theirs, boss], server=root, superusers={"postgres"}), over)] == [2, 3]


def test_export_keeps_labels_bounded():
    assert bounded_applications({"a": 5, "b": 3, "c": 1, "": 4}, 2) == {
        "a": "a",
        "": "(unnamed)",
        "b": OTHER,
        "c": OTHER,
    }
    backends = many(5, application="a") + many(3, start=200, application="b") + many(2, start=300, application="c")
    backends.append(backend(1, "idle in transaction", application="c", state_change=ago(90)))
    export_metrics(analyze(sample(backends), SETTINGS), top_n=1)

    def value(metric: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(metric, {"target": "default", **labels})

    assert value("pgops_pool_connections", application="a", state="idle") == 5
    assert value("pgops_pool_connections", application=OTHER, state="idle") == 5
    assert value("pgops_pool_connections", application=OTHER, state="idle in transaction") == 1
    assert value("pgops_pool_connections", application="b", state="idle") is None
    assert value("pgops_pool_limit_used_connections", kind="server", name="max_connections") == 11
    assert value("pgops_pool_problems", kind=IDLE_IN_TRANSACTION) == 1
    assert value("pgops_pool_problem_oldest_seconds", kind=IDLE_IN_TRANSACTION) == 90
    assert value("pgops_pool_problems", kind=XMIN_HORIZON) == 0
    assert value("pgops_pool_status") == EXIT_WARNING

    export_metrics(analyze(sample(many(2, application="z")), SETTINGS), top_n=1)
    assert value("pgops_pool_connections", application="a", state="idle") is None  # gone apps disappear
    assert value("pgops_pool_connections", application="z", state="idle") == 2


def test_export_idle_growth_keeps_the_top_growers():
    def growing(application: str) -> float | None:
        labels = {"target": "default", "application": application}
        return REGISTRY.get_sample_value("pgops_pool_idle_growing_connections", labels)

    export_idle_growth([Growth("a", (1, 2, 3)), Growth("b", (1, 5, 9)), Growth("", (0, 1, 2))], top_n=2)
    assert growing("b") == 9
    assert growing("a") == 3
    assert growing("(unnamed)") is None
    export_idle_growth([], top_n=2)
    assert growing("b") is None
