"""The workload report against a real PostgreSQL: an application's loop of single-row lookups is found as an N+1
suspect, a few heavy statements of about the same total time are not, and both views carry what they should."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from rich.console import Console

from pgops import workload
from pgops.cli.workload import render
from pgops.config import Settings, WorkloadSettings
from pgops.workload.decide import HEAVY, N_PLUS_ONE, WorkloadReport
from pgops.workload.read import take_snapshot

LOOP = "SELECT id, name FROM items WHERE id = $1"
# three shapes (pg_stat_statements' queryid ignores column aliases, so aliases would make one statement)
HEAVY_QUERIES = [
    "SELECT pg_sleep($1)",
    "SELECT pg_sleep($1), count(*) FROM items",
    "SELECT max(name), pg_sleep($1) FROM items",
]


def _total_ms(conn: psycopg.Connection, text: str) -> float:
    return next(s.total_time_ms for s in take_snapshot(conn).statements if s.query == text)


@pytest.fixture
def loop_ms(dsn: str, conn: psycopg.Connection) -> float:
    """1,000 lookups by key from one application (parameters bound by psycopg, so pg_stat_statements records
    `$1`), then three heavy statements: two calls each, each statement about as long as the whole loop. Returns
    the loop's total time."""
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, note text DEFAULT 'secret-note')")
    conn.execute("INSERT INTO items (id, name) SELECT n, 'item ' || n FROM generate_series(1, 1000) n")
    with psycopg.connect(dsn, autocommit=True, application_name="shop") as app:
        for key in range(1, 1001):
            assert app.execute("SELECT id, name FROM items WHERE id = %s", (key,)).fetchone() is not None
        total = _total_ms(conn, LOOP)
        for query in HEAVY_QUERIES:
            for _ in range(2):
                app.execute(query.replace("$1", "%s"), (total / 2 / 1000,))
    return total


@pytest.fixture
def shop(dsn: str, loop_ms: float) -> str:
    return dsn


def _report(dsn: str, loop_ms: float, **changes: object) -> WorkloadReport:
    """The report with both time thresholds at a quarter of the loop's time: its lookups (a thousandth of it each)
    pass, the heavy statements' calls (half of it each) are heavy, however fast this machine is."""
    quarter = timedelta(milliseconds=loop_ms / 4)
    options = WorkloadSettings(suspect_max_mean_time=quarter, heavy_mean_time=quarter)
    settings = Settings(workload=dataclasses.replace(options, **changes))
    with workload.open_connection(dsn, settings) as conn:
        return workload.report(conn, settings)


def test_the_loop_is_the_first_suspect_and_the_heavy_statements_are_not(shop, loop_ms):
    report = _report(shop, loop_ms)
    assert report.suspects and report.suspects[0].query == LOOP
    assert {s.query for s in report.suspects}.isdisjoint(HEAVY_QUERIES)
    loop = report.suspects[0]
    assert loop.kind == N_PLUS_ONE and loop.calls == 1000 and loop.rows == 1000 and loop.rows_per_call == 1.0
    assert loop.reason.startswith("1,000 calls (at least 1,000), 1.0 rows/call (at most 1.5), ")
    assert "= ANY($1)" in loop.fix
    heavy = {c.query: c for c in report.top if c.query in HEAVY_QUERIES}
    assert set(heavy) == set(HEAVY_QUERIES)
    assert all(c.kind == HEAVY and c.calls == 2 and c.reason.startswith("2 calls, ") for c in heavy.values())
    # the same total time, give or take (pg_sleep sleeps at least as asked): the shape decides, not the total
    assert all(c.total_time_ms >= loop.total_time_ms * 0.9 for c in heavy.values())
    assert report.status == 1 and report.database in shop
    # pgops' own statements (the snapshot itself, its session settings) are not the workload
    own = [c.query for c in report.top if "pg_stat_statements s" in c.query or c.query.startswith(("/*", "SET "))]
    assert own == []


def test_the_json_has_every_field_and_exit_code_1(shop, cli):
    result = cli("--dsn", shop, "workload", "--format", "json", "--top", "20")
    assert result.exit_code == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "warning" and data["exit_code"] == 1 and data["suspect_count"] >= 1
    assert {
        "database",
        "sampled_at",
        "stats_reset",
        "statement_count",
        "total_calls",
        "total_time_ms",
        "thresholds",
    } <= set(data)
    (first, *_) = data["suspects"]
    assert first["query"] == LOOP and first["kind"] == "n+1 suspect" and first["reason"] and first["fix"]
    assert isinstance(first["queryid"], str) and int(first["queryid"])  # 64 bits: a double would round it
    fields = {"rank", "queryid", "query", "calls", "total_time_ms", "mean_time_ms", "share", "rows", "rows_per_call",
              "shared_blks_hit", "shared_blks_read", "kind", "reason", "fix"}  # fmt: skip
    assert all(set(entry) == fields for entry in data["top"] + data["suspects"])
    assert sum(entry["share"] for entry in data["top"]) <= 1.0 + 1e-9
    assert data["thresholds"]["suspect_min_calls"] == 1000


def test_constants_pg_stat_statements_kept_are_masked_unless_asked_for(shop, cli):
    masked = cli("--dsn", shop, "workload", "--format", "json", "--top", "50")
    assert "secret-note" not in masked.stdout
    shown = cli("--dsn", shop, "workload", "--format", "json", "--top", "50", "--show-queries")
    assert "secret-note" in shown.stdout  # the CREATE TABLE's default: a utility statement's text is kept as run


@pytest.mark.parametrize("width", [80, 160])
def test_the_view_fits_the_terminal_without_cutting_anything(shop, loop_ms, width):
    report = _report(shop, loop_ms)
    console = Console(width=width, record=True, color_system=None)
    console.print(render(report))
    text = console.export_text()
    assert all(len(line) <= width for line in text.splitlines())
    # figures and reasons are never cut; a long statement's text may be, at query_length (other tests' statements
    # in this database's pg_stat_statements can be long)
    assert not [
        line for line in text.splitlines() if ("…" in line or "..." in line) and ("why:" in line or " call" in line)
    ]
    assert LOOP in text  # whole, on one line: 40 characters after the rank
    assert "N+1 suspects, by total time" in text and "why: 1,000 calls (at least 1,000)" in text.replace("\n   ", " ")
    for figure in (f"{c.calls:,} call" for c in report.top):
        assert figure in text


def test_the_human_view_through_the_cli(shop, cli):
    result = cli("--dsn", shop, "workload")
    assert result.exit_code == 1, result.stderr
    assert result.stdout.startswith("workload report WARNING") and LOOP in result.stdout


def test_no_suspect_is_exit_0(dsn, conn, cli):
    conn.execute("SELECT 1")
    result = cli("--dsn", dsn, "workload", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["suspects"] == []


def test_without_pg_stat_statements_it_says_what_to_do(dsn, conn, cli):
    conn.execute("DROP EXTENSION pg_stat_statements")
    result = cli("--dsn", dsn, "workload")
    assert result.exit_code == 3
    assert "pg_stat_statements is not installed in this database: run CREATE EXTENSION" in result.stderr


def test_a_role_without_pg_read_all_stats_sees_the_figures_and_is_told_the_grant(shop, pg_server, cli):
    role = f"workload_role_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        try:
            url = make_conninfo(shop, user=role)
            result = cli("--dsn", url, "workload", "--format", "json")
            assert result.exit_code == 1, result.stderr
            data = json.loads(result.stdout)
            assert data["suspects"][0]["query"] == "<insufficient privilege>" and data["suspects"][0]["calls"] == 1000
            assert data["hidden_statements"] >= 1
            assert f"GRANT pg_read_all_stats TO {role}" in data["visibility"]
            view = cli("--dsn", url, "workload")
            assert f"GRANT pg_read_all_stats TO {role}" in " ".join(view.stdout.split())
        finally:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.parametrize(
    ("shape", "calls", "query", "text"),
    [
        (
            "twenty rows per call",
            1000,
            "SELECT id, name FROM items WHERE id BETWEEN %s AND %s + 19",
            "SELECT id, name FROM items WHERE id BETWEEN $1 AND $2 + $3",
        ),
        ("one call fewer than suspect_min_calls", 999, "SELECT id, name FROM items WHERE id = %s", LOOP),
    ],
)
def test_a_loop_of_another_shape_is_not_a_suspect(dsn, conn, shape, calls, query, text):
    """The same application loop beside the same heavy statements, but one rule fails: no suspect at all. With
    the one-row shape (test above) the loop is the first suspect: the shape decides, not the total."""
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
    conn.execute("INSERT INTO items SELECT n, 'item ' || n FROM generate_series(1, 1100) n")
    with psycopg.connect(dsn, autocommit=True, application_name="shop") as app:
        for key in range(1, calls + 1):
            app.execute(query, (key,) * query.count("%s")).fetchall()
        total = _total_ms(conn, text)
        for heavy in HEAVY_QUERIES:
            for _ in range(2):
                app.execute(heavy.replace("$1", "%s"), (total / 2 / 1000,))
    report = _report(dsn, total)
    loop = next(c for c in report.top if c.query == text)
    assert loop.calls == calls and loop.kind is None, shape
    assert report.suspects == [] and report.status == 0, [s.query for s in report.suspects]
