"""The workload report's rules on hand-made snapshots: one test per rule."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from pgops.config import WorkloadSettings
from pgops.errors import EXIT_OK, EXIT_WARNING
from pgops.output import human_duration, human_milliseconds
from pgops.workload.decide import HEAVY, N_PLUS_ONE, decide, n_plus_one_fix, verb
from pgops.workload.read import Snapshot, StatementStats

SETTINGS = WorkloadSettings()
LOOP = "SELECT id, name FROM customers WHERE id = $1"


def stats(query: str, calls: int, total_ms: float, rows: int, *, read: int = 0) -> StatementStats:
    return StatementStats(
        queryid=abs(hash(query)) % 2**62,
        query=query,
        calls=calls,
        total_time_ms=total_ms,
        rows=rows,
        shared_blks_hit=calls * 3,
        shared_blks_read=read,
    )


def snapshot(*statements: StatementStats) -> Snapshot:
    return Snapshot("app", datetime(2026, 1, 1, tzinfo=UTC), list(statements))


# The rest of the workload, so each statement below has a share of about 10% to 30% of the total.
BACKGROUND = stats("SELECT * FROM orders WHERE created_at > $1", 300, 600.0, 3000)


def test_the_n_plus_one_shape_is_suspected_with_its_reason_and_fix():
    loop = stats(LOOP, 12_000, 600.0, 12_000)  # 0.05 ms mean, one row per call
    report = decide(snapshot(loop, BACKGROUND), SETTINGS)
    (suspect,) = report.suspects
    assert suspect.kind == N_PLUS_ONE and suspect.query == LOOP
    assert suspect.reason == (
        "12,000 calls (at least 1,000), 1.0 rows/call (at most 1.5), 0.050 ms mean (at most 1 ms), "
        "50.0% of all statement time (at least 1%)"
    )
    assert "join" in suspect.fix and "= ANY($1)" in suspect.fix
    assert report.status == EXIT_WARNING and report.suspect_count == 1


def test_a_lookup_that_finds_nothing_is_suspected_too():
    missing = stats(LOOP, 5_000, 500.0, 0)  # 0 rows per call: a loop of lookups of keys that are not there
    assert [s.query for s in decide(snapshot(missing, BACKGROUND), SETTINGS).suspects] == [LOOP]


def test_a_heavy_statement_of_the_same_total_is_not_a_suspect():
    heavy = stats("SELECT sum(total) FROM orders", 3, 600.0, 3)  # 200 ms per call, one row each
    report = decide(snapshot(heavy, BACKGROUND), SETTINGS)
    assert report.suspects == [] and report.status == EXIT_OK
    top = next(c for c in report.top if c.query == heavy.query)
    assert top.kind == HEAVY and top.reason == "3 calls, 200.0 ms mean (at least 20 ms), 1.0 rows/call"
    assert "EXPLAIN (ANALYZE, BUFFERS)" in top.fix


def test_a_frequent_statement_returning_many_rows_per_call_is_not_a_suspect():
    listing = stats("SELECT * FROM order_lines WHERE order_id = $1", 12_000, 600.0, 12_000 * 40)
    report = decide(snapshot(listing, BACKGROUND), SETTINGS)
    assert report.suspects == [] and report.top[0].kind is None


def test_a_frequent_single_row_statement_with_a_large_mean_time_is_not_a_suspect():
    slow_lookup = stats(LOOP, 12_000, 12_000 * 5.0, 12_000)  # 5 ms per call: each call is the problem
    assert decide(snapshot(slow_lookup, BACKGROUND), SETTINGS).suspects == []


def test_a_rare_or_small_share_statement_is_not_a_suspect():
    rare = stats(LOOP, 999, 600.0, 999)  # under suspect_min_calls
    assert decide(snapshot(rare, BACKGROUND), SETTINGS).suspects == []
    tiny = stats(LOOP, 2_000, 5.0, 2_000)  # 5 ms of 605 ms: under 1% of the time
    assert decide(snapshot(tiny, BACKGROUND), SETTINGS).suspects == []


def test_suspects_and_top_are_ranked_by_total_time_with_their_share():
    small = stats("SELECT id FROM tags WHERE id = $1", 2_000, 100.0, 2_000)
    large = stats("SELECT id FROM users WHERE id = $1", 10_000, 300.0, 10_000)
    heavy = stats("SELECT count(*) FROM events", 2, 1000.0, 2)  # the heaviest, but no suspect
    report = decide(snapshot(small, heavy, BACKGROUND, large), SETTINGS)
    assert [c.query for c in report.suspects] == [large.query, small.query]
    assert [c.query for c in report.top] == [heavy.query, BACKGROUND.query, large.query, small.query]
    assert [c.rank for c in report.top] == [1, 2, 3, 4]
    assert [round(c.share, 3) for c in report.top] == [0.5, 0.3, 0.15, 0.05]
    assert report.total_time_ms == 2000.0 and report.statement_count == 4 and report.total_calls == 12_302


def test_top_limits_the_lists_but_counts_every_suspect():
    loops = [stats(f"SELECT id FROM t{n} WHERE id = $1", 5_000, 100.0 + n, 5_000) for n in range(4)]
    report = decide(snapshot(*loops), dataclasses.replace(SETTINGS, top=2))
    assert len(report.top) == 2 and len(report.suspects) == 2 and report.suspect_count == 4


def test_thresholds_come_from_the_settings():
    loop = stats(LOOP, 12_000, 600.0, 12_000)
    strict = dataclasses.replace(SETTINGS, suspect_max_mean_time=timedelta(microseconds=10))
    assert decide(snapshot(loop, BACKGROUND), strict).suspects == []
    assert decide(snapshot(loop, BACKGROUND), dataclasses.replace(SETTINGS, suspect_min_share=0.6)).suspects == []


def test_constants_left_in_the_text_are_masked_unless_asked_for():
    utility = stats("SELECT * FROM t WHERE note = 'secret' AND id = $1 LIMIT 10", 5, 1.0, 5)
    assert decide(snapshot(utility), SETTINGS).top[0].query == "SELECT * FROM t WHERE note = ? AND id = $1 LIMIT ?"
    shown = decide(snapshot(utility), dataclasses.replace(SETTINGS, mask_queries=False))
    assert shown.top[0].query == utility.query


def test_the_fix_follows_what_the_statement_does():
    assert "WHERE id = ANY($1)" in n_plus_one_fix("UPDATE t SET x = $1 WHERE id = $2")
    assert "unnest" in n_plus_one_fix("/* app */ INSERT INTO t VALUES ($1)")
    assert "join" in n_plus_one_fix(LOOP)


def test_an_empty_snapshot_is_ok():
    report = decide(snapshot(), SETTINGS)
    assert report.top == [] and report.suspects == [] and report.status == EXIT_OK and report.total_time_ms == 0


def test_times_read_well():
    assert [human_milliseconds(v) for v in (0.031, 2.5, 31.04, 12_300, 270_000, 8_640_000)] == [
        "0.031 ms", "2.50 ms", "31.0 ms", "12.3 s", "4.5 min", "2.4 h",
    ]  # fmt: skip
    assert [human_duration(v) for v in (0.25, 12.34, 270, 8640, 259_200, None)] == [
        "250ms", "12.3s", "4.5m", "2.4h", "3.0d", "",
    ]  # fmt: skip


def test_statements_hidden_from_the_role_still_count_and_the_report_names_the_grant():
    hidden = stats("<insufficient privilege>", 12_000, 600.0, 12_000)
    report = decide(dataclasses.replace(snapshot(hidden, BACKGROUND), role="watcher"), SETTINGS)
    assert report.suspect_count == 1 and report.hidden_statements == 1
    assert report.visibility == (
        "the text of 1 statement of other roles is hidden from watcher: GRANT pg_read_all_stats TO watcher shows it"
    )
    assert decide(snapshot(BACKGROUND), SETTINGS).visibility is None


def test_utility_statements_are_neither_suspects_nor_heavy():
    savepoints = stats("SAVEPOINT s1", 12_000, 600.0, 0)  # an ORM's savepoint per row: no join would remove it
    index = stats("CREATE INDEX CONCURRENTLY ON orders (customer_id)", 1, 60_000.0, 0)
    # each on its own beside the background, so that it passes every other threshold (the savepoints take 50%
    # of the time: with the index, 1%, under suspect_min_share, which would hide the rule)
    for statement in (savepoints, index):
        report = decide(snapshot(statement, BACKGROUND), SETTINGS)
        assert report.suspects == [] and all(c.kind is None for c in report.top)
    as_select = stats("SELECT id FROM t WHERE id = $1", 12_000, 600.0, 0)  # the same figures, a query: suspected
    assert [c.query for c in decide(snapshot(as_select, BACKGROUND), SETTINGS).suspects] == [as_select.query]


def test_the_verb_is_read_past_comments_parentheses_and_in_linear_time():
    assert verb("/* app */ -- loop\n ( SELECT 1)") == "select" and verb("  ") == "" and verb("/* open") == ""
    assert verb("/**/" * 50_000 + " x") == "x" and verb("/* a */ --" * 20_000) == ""
