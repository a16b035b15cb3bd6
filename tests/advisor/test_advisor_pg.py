"""The advisor against a real PostgreSQL: the demo workload's acceptance, the script under psql, --apply,
formats, the fallback without hypopg, hypopg hygiene, and statements it must never execute."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgops import demo
from pgops.advisor.apply import Built, apply
from pgops.advisor.catalog import read_catalog
from pgops.advisor.hypo import PlanError, Planner, hypopg_schema
from pgops.advisor.model import (
    SKIP_PRIVILEGE,
    Advice,
    AdvisorOptions,
    Analysis,
    Candidate,
    Catalog,
    Recommendation,
)
from pgops.advisor.parse import analyze
from pgops.advisor.run import advise
from pgops.advisor.script import render_sql
from pgops.advisor.size import estimate_size
from pgops.advisor.whatif import WhatIf
from pgops.advisor.workload import StatementFilter, read_pg_stat_statements
from pgops.config import DatabaseSettings, Settings
from tests.advisor.helpers import statement
from tests.conftest import PgServer, create_database, drop_database

# The demo's read statements, with values of rows that exist, as the application sends them.
TENANT, EMAIL, CUSTOMER = 8, "user7@tenant8.example", 7
PROBES = [
    ("SELECT id, name FROM customers WHERE tenant_id = %s AND email = %s", (TENANT, EMAIL)),
    (
        "SELECT o.id, o.status, o.total, o.created_at FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE c.tenant_id = %s AND c.email = %s ORDER BY o.created_at DESC",
        (TENANT, EMAIL),
    ),
    ("SELECT id, status, total, created_at FROM orders WHERE customer_id = %s ORDER BY created_at DESC LIMIT 10", (7,)),
]


def settings_for(dsn: str) -> Settings:
    return Settings(database=DatabaseSettings(url=dsn))


@pytest.fixture(scope="module")
def demo_template(pg_server: PgServer) -> Iterator[str]:
    """The demo's schema and data at a small scale, generated once; each test copies it."""
    name = create_database(pg_server, "pgops_advisor_template")
    with psycopg.connect(pg_server.database_dsn(name), autocommit=True) as conn:
        demo.load_schema(conn)
        demo.generate(conn, scale=0.02, seed=0.5)
    yield name
    drop_database(pg_server, name)


@pytest.fixture
def demo_dsn(pg_server: PgServer, demo_template: str) -> Iterator[str]:
    """A copy of the demo database of this test's own, after the demo application's workload ran on it."""
    name = f"pgops_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(demo_template))
        )
    dsn = pg_server.database_dsn(name)
    demo.run_workload(dsn, statements=400, clients=2, seed=7)
    yield dsn
    drop_database(pg_server, name)


@pytest.fixture
def demo_conn(demo_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(demo_dsn, autocommit=True) as connection:
        yield connection


def _measure(conn: psycopg.Connection) -> tuple[float, int, set[str]]:
    """Planner cost, buffers touched and indexes used by the probes (this test runs them, not the advisor)."""
    cost, buffers, indexes = 0.0, 0, set()
    for query, params in PROBES:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + sql.SQL(query), params)
            plan = cur.fetchone()[0][0]["Plan"]
        cost += plan["Total Cost"]
        buffers += plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)  # includes its children
        stack = [plan]
        while stack:
            node = stack.pop()
            indexes.add(node.get("Index Name", ""))
            stack += node.get("Plans", [])
    return cost, buffers, indexes - {""}


def _psql(dsn: str, script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("psql") or "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.needs_hypopg
def test_demo_workload_gets_its_indexes_and_runs_faster_after_fix_sql(demo_dsn, demo_conn, cli, tmp_path):
    result = cli("--dsn", demo_dsn, "advise-indexes", "--min-calls", "3", "--format", "json")
    assert result.exit_code == 1, result.stderr  # indexes proposed
    advice = json.loads(result.stdout)
    proposed = {(r["candidate"]["table"][1], tuple(r["candidate"]["columns"])) for r in advice["recommendations"]}
    assert ("customers", ("tenant_id", "email")) in proposed
    assert any(table == "orders" and columns[0] == "customer_id" for table, columns in proposed), proposed
    assert advice["hypopg"] is True
    assert all(r["validated"] and r["saved_ms"] > 0 for r in advice["recommendations"])

    before_cost, before_buffers, before_indexes = _measure(demo_conn)
    script = cli("--dsn", demo_dsn, "advise-indexes", "--min-calls", "3")
    assert script.exit_code == 1
    fix = tmp_path / "fix.sql"
    fix.write_text(script.stdout)
    first = _psql(demo_dsn, fix)
    assert first.returncode == 0, first.stderr
    indexes = demo_conn.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid IN ('customers'::regclass, 'orders'::regclass) ORDER BY 1"
    ).fetchall()
    second = _psql(demo_dsn, fix)  # running it again is harmless
    assert second.returncode == 0, second.stderr
    assert (
        demo_conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid IN ('customers'::regclass, 'orders'::regclass) ORDER BY 1"
        ).fetchall()
        == indexes
    )
    assert all(valid for _, valid in indexes)

    demo_conn.execute("ANALYZE customers, orders")
    after_cost, after_buffers, after_indexes = _measure(demo_conn)
    new = {name for name, _ in indexes} - before_indexes - {"customers_pkey", "orders_pkey"}
    assert "customers_tenant_id_email_idx" in after_indexes
    assert any(name.startswith("orders_customer_id") for name in after_indexes & new)
    assert after_cost < before_cost / 5
    assert after_buffers < before_buffers / 5  # the work the statements do, not a timing


@pytest.mark.needs_hypopg
def test_script_formats_explain_and_exit_codes(demo_dsn, demo_conn, cli):
    for _ in range(3):  # a utility statement of the application's: read, and skipped with its reason
        demo_conn.execute("CREATE TEMP TABLE IF NOT EXISTS scratch (id int)")
    table = cli("--dsn", demo_dsn, "advise-indexes", "--min-calls", "3", "--format", "table", "--explain")
    assert table.exit_code == 1
    assert "Proposed indexes (validated with hypopg)" in table.stdout
    assert "public.customers (tenant_id, email)" in table.stdout
    assert "Rejected candidates" in table.stdout
    script = cli("--dsn", demo_dsn, "advise-indexes", "--min-calls", "3", "--explain", "--max-indexes", "1")
    text = script.stdout
    assert "-- validated with hypopg" in text and "SET lock_timeout = '5000ms';" in text
    assert text.count("CREATE INDEX CONCURRENTLY IF NOT EXISTS") == 1
    assert "over the budget of 1 indexes (--max-indexes)" in text
    assert "-- rollback: DROP INDEX CONCURRENTLY IF EXISTS" in text
    assert "-- skipped statements" in text and "utility or DDL statement: CREATE" in text
    assert text.rstrip().splitlines()[-1].startswith("-- summary: ")
    nothing = cli("--dsn", demo_dsn, "advise-indexes", "--min-calls", "1000000")
    assert nothing.exit_code == 0 and "-- no index proposed" in nothing.stdout
    summary = nothing.stdout.rstrip().splitlines()[-1]  # what the filter left out, and what brings it in
    assert re.search(r"left out: \d+ called fewer than 1000000 times \(--min-calls 1 brings them in\)", summary)


def test_apply_builds_concurrently_and_a_second_apply_finds_them(demo_dsn, cli, demo_conn):
    first = cli("--dsn", demo_dsn, "advise-indexes", "--min-calls", "3", "--apply", "--format", "json")
    assert first.exit_code == 1, first.stderr
    names = [r["name"] for r in json.loads(first.stdout)["recommendations"]]
    assert names and all(f"{name}: built" in first.stderr for name in names)
    valid = demo_conn.execute(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = ANY(%s) AND i.indisvalid AND obj_description(c.oid, 'pg_class') = 'pgops advise-indexes'",
        [names],
    ).fetchone()[0]
    assert valid == len(names)  # valid, and marked as pgops' own for the next run
    settings = settings_for(demo_dsn)
    advice = advise(demo_dsn, settings, AdvisorOptions(min_calls=3))
    assert not {r.name for r in advice.recommendations} & set(names)  # built indexes now serve the workload


def _recommendation(name: str, create: str) -> Recommendation:
    candidate = Candidate(("public", "orders"), ("status",))
    drop = f"DROP INDEX CONCURRENTLY IF EXISTS public.{name}"
    return Recommendation(name, candidate, create, drop, 0, 0, 0.0, False, 0.0, True, [])


def test_a_failed_build_drops_its_invalid_leftover(demo_dsn, demo_conn):
    # A unique build on a non-unique column fails after the catalog entry exists: the INVALID-leftover case.
    broken = _recommendation(
        "orders_status_broken",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS orders_status_broken ON public.orders (status)",
    )
    advice = Advice("db", datetime.now(UTC), [], {}, True, "", 0, 0, recommendations=[broken])
    results = apply(demo_dsn, settings_for(demo_dsn), advice)
    assert results[0].outcome is Built.FAILED and "dropped the INVALID leftover" in results[0].detail
    assert demo_conn.execute("SELECT to_regclass('public.orders_status_broken')").fetchone()[0] is None

    # An INVALID leftover of an earlier run (made here on purpose) is rebuilt, not kept by IF NOT EXISTS.
    with pytest.raises(psycopg.errors.UniqueViolation):
        demo_conn.execute("CREATE UNIQUE INDEX CONCURRENTLY orders_status_idx ON orders (status)")
    advice.recommendations = [
        _recommendation(
            "orders_status_idx", "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_status_idx ON public.orders (status)"
        )
    ]
    assert apply(demo_dsn, settings_for(demo_dsn), advice)[0].outcome is Built.BUILT
    assert demo_conn.execute(
        "SELECT indisvalid, indisunique FROM pg_index WHERE indexrelid = 'orders_status_idx'::regclass"
    ).fetchone() == (True, False)


def test_without_hypopg_rules_over_pg_stats_still_find_the_indexes_and_say_unvalidated(demo_dsn, demo_conn):
    demo_conn.execute("DROP EXTENSION IF EXISTS hypopg")  # a server without it at all runs this too
    advice = advise(demo_dsn, settings_for(demo_dsn), AdvisorOptions(min_calls=3))
    assert not advice.hypopg and "hypopg is not installed" in advice.hypopg_note
    assert f"package postgresql-{demo_conn.info.server_version // 10000}-hypopg" in advice.hypopg_note
    proposed = {(r.candidate.table[1], r.candidate.columns[:2]) for r in advice.recommendations}
    assert ("customers", ("tenant_id", "email")) in proposed
    assert all(not r.validated for r in advice.recommendations)
    assert "-- UNVALIDATED: hypopg is not installed" in render_sql(advice)


@contextlib.contextmanager
def _small_table(conn, dsn: str) -> Iterator[tuple[psycopg.Connection, Catalog, Planner]]:
    """Table `t` (id, a: 100 values, b: text) of 5,000 rows, and a planning session on it."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, a int, b text)")
    conn.execute("INSERT INTO t SELECT i, i % 100, md5(i::text) FROM generate_series(1, 5000) i")
    conn.execute("ANALYZE t")
    with psycopg.connect(dsn, autocommit=True) as session:
        catalog = read_catalog(session)
        yield session, catalog, Planner(session, catalog, hypopg_schema(session))


@pytest.mark.needs_hypopg
def test_hypothetical_indexes_and_prepared_statements_never_outlive_a_run(dsn, conn):
    with _small_table(conn, dsn) as (session, catalog, planner):
        good = analyze(statement("SELECT * FROM t WHERE a = $1"), catalog)
        # fails on every version: PREPARE (15) and EXPLAIN (GENERIC_PLAN) (16+) both look the function up
        bad = analyze(statement("SELECT * FROM t WHERE a = $1 AND b = no_such_function($2)"), catalog)
        assert isinstance(good, Analysis) and isinstance(bad, Analysis)
        with pytest.raises(RuntimeError), planner.session():
            with planner.hypothetical(Candidate(("public", "t"), ("a",))) as (name, size):
                costs = planner.costs(good)
                assert name in costs.used and size > 0
                assert session.execute("SELECT count(*) FROM hypopg_list_indexes").fetchone()[0] == 1
            assert session.execute("SELECT count(*) FROM hypopg_list_indexes").fetchone()[0] == 0
            planner.hypothetical(Candidate(("public", "t"), ("b",))).__enter__()  # left open on purpose
            with pytest.raises(PlanError):
                planner.costs(bad)
            raise RuntimeError("an error in the middle of costing")
        assert session.execute("SELECT count(*) FROM hypopg_list_indexes").fetchone()[0] == 0
        assert session.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
        assert session.execute("SHOW transaction_read_only").fetchone()[0] == "off"  # only our own transactions


@pytest.mark.needs_hypopg
def test_a_what_if_plan_of_a_parameterized_statement_is_planned_once(dsn, conn):
    """Once a statement's parameter types are known, the what-if loop plans it with its realistic values only,
    for the same cost; the generic plan is made where those values don't fit."""
    with _small_table(conn, dsn) as (_, catalog, planner):
        query = analyze(statement("SELECT * FROM t WHERE a = $1 AND b LIKE $2"), catalog)
        custom = analyze(statement("SELECT * FROM t WHERE a = $1"), catalog)
        assert isinstance(query, Analysis) and isinstance(custom, Analysis)
        with planner.session(), planner.hypothetical(Candidate(("public", "t"), ("a",))):
            both = planner.costs(custom)
            once = planner.costs(custom, generic_plan=False)
            assert both.generic is not None and once.generic is None
            assert once.cost == both.cost and once.used == both.used
            no_values = planner.costs(query, generic_plan=False)  # LIKE $2 has no realistic value
            assert no_values.generic is not None and no_values.cost == no_values.generic


@pytest.mark.needs_hypopg
def test_an_index_hypopg_refuses_is_left_out_of_the_plan_not_the_run(dsn, conn):
    """hypopg refusing one hypothetical index (a column gone since the catalog was read) costs the set without
    it and names it, instead of aborting the whole run."""
    with _small_table(conn, dsn) as (session, catalog, planner):
        query = analyze(statement("SELECT id, a FROM t WHERE a = 5"), catalog)
        assert isinstance(query, Analysis)
        good, gone = Candidate(("public", "t"), ("a",)), Candidate(("public", "t"), ("a", "no_such_column"))
        with planner.session():
            base = planner.costs(query).cost
            whatif = WhatIf(planner, catalog, [query], {0: base})
            assert whatif.cost(0, frozenset({gone})) == base
            assert whatif.cost(0, frozenset({good, gone})) < base / 2
            alone = whatif.cost(0, frozenset({good}))
            planned = whatif.planned
            unused = Candidate(("public", "t"), ("b",))  # a key the statement never names: no plan to make
            assert whatif.cost(0, frozenset({good, unused})) == alone
            assert whatif.planned == planned
        assert list(planner.refused) == [gone] and "no_such_column" in planner.refused[gone]
        assert whatif.failures == {}
        assert session.execute("SELECT count(*) FROM hypopg_list_indexes").fetchone()[0] == 0


@pytest.mark.needs_hypopg
def test_a_parallel_scan_only_hypopg_size_allows_is_planned_again_without(dsn, conn):
    """hypopg sizes a hypothetical index above the built one; where that puts it over
    min_parallel_index_scan_size and the built index would stay under, a parallel scan of it is a plan the built
    index can't have (TPC-DS q35), and the planner is asked again without it."""
    conn.execute("CREATE TABLE small (id int PRIMARY KEY, k int NOT NULL, v text)")
    conn.execute("INSERT INTO small SELECT i, i % 5000, md5(i::text) FROM generate_series(1, 60000) i")
    conn.execute("ANALYZE small")
    with psycopg.connect(dsn, autocommit=True) as session:
        catalog = read_catalog(session)
        planner = Planner(session, catalog, hypopg_schema(session))
        key = Candidate(("public", "small"), ("k",))
        estimate = estimate_size(catalog, key)
        with planner.session():
            planner.configure(frozenset({key}))
            ((oid, _),) = planner._by_oid.items()
            hypopg = session.execute("SELECT hypopg_relation_size(%s)", [oid]).fetchone()[0]
            assert estimate < hypopg  # hypopg's own estimate is the larger: the case at hand
            scan = {"Node Type": "Index Only Scan", "Parallel Aware": True, "Index Name": f"<{oid}>btree_small_k"}
            plan = {"Node Type": "Gather", "Plans": [scan]}
            session.execute(f"SET min_parallel_index_scan_size = '{(estimate + hypopg) // 2 // 1024}kB'")
            assert planner._unbuildable_parallel_scan(plan) == hypopg
            assert planner._unbuildable_parallel_scan({**plan, "Plans": [{**scan, "Parallel Aware": False}]}) is None
        planner = Planner(session, catalog, hypopg_schema(session))
        with planner.session():
            planner.configure(frozenset({key}))
            ((oid, _),) = planner._by_oid.items()
            scan["Index Name"] = f"<{oid}>btree_small_k"
            session.execute(f"SET min_parallel_index_scan_size = '{estimate // 2 // 1024}kB'")  # built, it gets one
            assert planner._unbuildable_parallel_scan(plan) is None


def test_generic_plan_on_16_costs_parameters_prepare_can_not_type(pg_server, dsn, conn):
    """A parameter nothing types (`$2 IS NULL`), which PREPARE alone rejects: planned with the first fallback type
    that works (EXPLAIN (GENERIC_PLAN) on 16+ when none does), and no prepared statement is left behind."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, a int, b text)")
    conn.execute("INSERT INTO t SELECT i, i % 100, md5(i::text) FROM generate_series(1, 5000) i")
    conn.execute("ANALYZE t")
    with psycopg.connect(dsn, autocommit=True) as session:
        catalog = read_catalog(session)
        planner = Planner(session, catalog)  # no hypothetical index: plain plans, with or without hypopg
        ordinary = analyze(statement("SELECT * FROM t WHERE a = $1"), catalog)
        untyped = analyze(statement("SELECT * FROM t WHERE a = $1 AND $2 IS NULL"), catalog)
        assert isinstance(ordinary, Analysis) and isinstance(untyped, Analysis)
        assert planner.costs(ordinary).generic > 0
        costs = planner.costs(untyped)  # PREPARE with $2 as integer, the first type it plans with, on every version
        assert costs.generic is not None and costs.generic > 0
        assert session.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0


def test_constant_lists_as_pg_stat_statements_records_them_get_their_index(pg_server, dsn, conn):
    """pg_stat_statements 1.12 (PostgreSQL 18) collapses a list of constants, `IN ($1 /*, ... */)`, so lists of
    any length are one entry; before, each length is an entry with one parameter per constant. Either way the
    advisor reads, parses and costs the entries and proposes the index."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, a int, b text)")
    conn.execute("INSERT INTO t SELECT i, i % 1000, md5(i::text) FROM generate_series(1, 100000) i")
    conn.execute("ANALYZE t")
    conn.execute(
        "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)"
    )
    for start in range(0, 50, 5):
        conn.execute(f"SELECT id, b FROM t WHERE a IN ({start}, {start + 1}, {start + 2})")
        conn.execute(f"SELECT id, b FROM t WHERE a IN ({start}, {start + 1}, {start + 2}, {start + 3})")
    from pgops.advisor.workload import StatementFilter, read_pg_stat_statements

    texts = [
        s.query for s in read_pg_stat_statements(conn, StatementFilter(min_calls=1, top=100)) if "WHERE a IN" in s.query
    ]
    if pg_server.version_num >= 180000:
        assert texts == ["SELECT id, b FROM t WHERE a IN ($1 /*, ... */)"]
    else:
        assert sorted(texts) == [
            "SELECT id, b FROM t WHERE a IN ($1, $2, $3)",
            "SELECT id, b FROM t WHERE a IN ($1, $2, $3, $4)",
        ]
    advice = advise(dsn, settings_for(dsn), AdvisorOptions(min_calls=5))
    (index,) = advice.recommendations
    assert (index.candidate.table, index.candidate.columns) == (("public", "t"), ("a",))
    assert len(index.queries) == len(texts)
    assert not [s for s in advice.skipped if "WHERE a IN" in s.query]


def test_file_and_log_statements_are_explained_never_executed(demo_dsn, demo_conn, tmp_path):
    count_rows = "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM customers)"
    counts = demo_conn.execute(count_rows).fetchone()
    workload = tmp_path / "workload.sql"
    workload.write_text(
        "DELETE FROM orders;\n"
        "UPDATE customers SET name = 'gone';\n"
        "WITH d AS (DELETE FROM customers RETURNING id) SELECT count(*) FROM d;\n"
        "SELECT id, customer_id, total, created_at FROM orders WHERE status = 'open' "
        "ORDER BY created_at DESC LIMIT 20;\n"
        "CREATE TABLE evil (id int);\n"
        "SELECT * FROM missing_table;\n"
    )
    log = tmp_path / "postgresql.log"
    log.write_text(
        "2026-11-23 10:00:00 UTC [1] ERROR:  canceling statement due to statement timeout\n"
        "2026-11-23 10:00:00 UTC [1] STATEMENT:  SELECT * FROM customers WHERE tenant_id = 3 AND email = 'x@y'\n"
        "2026-11-23 10:00:01 UTC [2] LOG:  duration: 900.5 ms  statement: SELECT * FROM customers\n"
        "\tWHERE tenant_id = 5 AND email = 'z@y'\n"
    )
    advice = advise(demo_dsn, settings_for(demo_dsn), AdvisorOptions(from_file=workload, from_log=log))
    assert (
        demo_conn.execute("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM customers)").fetchone() == counts
    )
    assert demo_conn.execute("SELECT to_regclass('evil')").fetchone()[0] is None
    assert demo_conn.execute("SELECT count(*) FROM customers WHERE name = 'gone'").fetchone()[0] == 0
    assert advice.sources == [f"file {workload}", f"log {log}"]
    reasons = advice.skipped_by_reason
    assert reasons["utility or DDL statement"] == 1 and reasons["relation no longer exists"] == 1
    considered = [r.candidate.describe() for r in advice.recommendations] + [r.index for r in advice.rejected]
    assert "public.orders (created_at) WHERE status = 'open'" in considered  # the partial variant was costed
    # tenant_id takes different constants: no partial index per tenant, one index for all of them
    assert any(r.candidate.columns == ("tenant_id", "email") for r in advice.recommendations), advice.rejected


def test_other_roles_statements_are_counted_as_insufficient_privilege(demo_dsn, pg_server, demo_conn):
    dbname = str(conninfo_to_dict(demo_dsn)["dbname"])
    conn = demo_conn
    role = f"advisor_reader_{dbname[-6:]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        reader_dsn = pg_server.database_dsn(dbname, user=role)
        advice = advise(reader_dsn, settings_for(reader_dsn), AdvisorOptions(min_calls=3))
        assert advice.skipped_by_reason.get(SKIP_PRIVILEGE, 0) >= 5
        assert advice.recommendations == []
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_missing_pg_stat_statements_is_one_line_naming_the_fix(dsn, conn, cli):
    conn.execute("DROP EXTENSION pg_stat_statements")
    result = cli("--dsn", dsn, "advise-indexes")
    assert result.exit_code == 3
    assert "CREATE EXTENSION pg_stat_statements" in result.stderr and "postgresql-contrib" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_pg_stat_statements_filters_and_metrics(demo_dsn, demo_conn, cli, tmp_path):
    from pgops import metrics
    from pgops.advisor.workload import StatementFilter, read_pg_stat_statements

    everything = read_pg_stat_statements(demo_conn, StatementFilter(min_calls=1, top=1000))
    assert len(everything) > 5
    assert all(a.total_time_ms >= b.total_time_ms for a, b in itertools.pairwise(everything))
    top = read_pg_stat_statements(demo_conn, StatementFilter(min_calls=1, top=3))
    # the heaviest, in order; entries grow while we look (other sessions' statements), so near-ties may swap
    assert len(top) == 3 and all(a.total_time_ms >= b.total_time_ms for a, b in itertools.pairwise(top))
    assert {s.queryid for s in top} <= {s.queryid for s in everything[:5]}
    busy = read_pg_stat_statements(demo_conn, StatementFilter(min_calls=50, top=1000))
    assert busy and all(s.calls >= 50 for s in busy) and len(busy) < len(everything)
    assert read_pg_stat_statements(demo_conn, StatementFilter(min_calls=1, top=1000, user="no_such_role")) == []
    heavy = everything[0].total_time_ms  # the reads above are statements too: entries grow while we look
    heaviest = read_pg_stat_statements(demo_conn, StatementFilter(min_calls=1, min_total_time_ms=heavy))
    assert everything[0].queryid in {s.queryid for s in heaviest}
    assert all(s.total_time_ms >= heavy for s in heaviest) and len(heaviest) < len(everything)

    runs = metrics.ADVISOR_RUNS.labels(outcome="ok")._value.get()
    advise(demo_dsn, settings_for(demo_dsn), AdvisorOptions(min_calls=3))
    assert metrics.ADVISOR_RUNS.labels(outcome="ok")._value.get() == runs + 1
    assert metrics.ADVISOR_PROPOSED._value.get() >= 2

    missing = cli("--dsn", demo_dsn, "advise-indexes", "--from-file", str(tmp_path / "nope.sql"))
    assert missing.exit_code == 3 and "can't read the statements file" in missing.stderr
    bad_size = cli("--dsn", demo_dsn, "advise-indexes", "--max-size", "lots")
    assert bad_size.exit_code == 3 and "expected a size" in bad_size.stderr


def test_generated_index_statements_are_valid_sql_for_every_shape(dsn, conn):
    from pgops.advisor.model import Constant
    from pgops.advisor.script import drop_statement, index_definition, index_name

    conn.execute('CREATE SCHEMA "Odd Schema"')
    conn.execute('CREATE TABLE "Odd Schema"."T" (id int, "Mixed Case" text, flag boolean, gone timestamptz, n int)')
    table = ("Odd Schema", "T")
    shapes = [
        Candidate(table, ("Mixed Case",)),
        Candidate(table, ("n", "id"), ("Mixed Case",)),
        Candidate(table, ("id",), (), (Constant("Mixed Case", "=", "o'brien; DROP TABLE x"),)),
        Candidate(table, ("id",), (), (Constant("flag", "=", True), Constant("gone", "IS NULL"))),
        Candidate(table, ("n",), (), (Constant("n", "=", -5),)),
        Candidate(table, ("id",), (), (Constant("gone", "IS NOT NULL"),)),
        Candidate(table, ("n", "Mixed Case"), (), (), (None, "text_pattern_ops")),
    ]
    for candidate in shapes:
        name = index_name(candidate)
        for _ in range(2):  # IF NOT EXISTS: the second time is harmless
            conn.execute(index_definition(candidate, name, concurrently=True, if_not_exists=True))
        assert conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s", [name]
        ).fetchone() == (True,)
        conn.execute(drop_statement(table[0], name))
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'Odd Schema'").fetchone()[0] == 0


@pytest.mark.needs_hypopg
def test_like_prefix_outside_the_c_collation_is_proposed_with_text_pattern_ops(dsn, conn, tmp_path):
    conn.execute('CREATE TABLE people (id int PRIMARY KEY, tenant_id int, email text COLLATE "en-x-icu")')
    conn.execute("INSERT INTO people SELECT i, i % 10, 'user' || i || '@example.com' FROM generate_series(1, 20000) i")
    conn.execute("ANALYZE people")
    workload = tmp_path / "like.sql"
    workload.write_text("SELECT id FROM people WHERE email LIKE 'user123%';\n")
    advice = advise(dsn, settings_for(dsn), AdvisorOptions(from_file=workload))
    assert [r.candidate.describe() for r in advice.recommendations] == ["public.people (email text_pattern_ops)"]
    cost = advice.recommendations[0].queries[0]
    assert advice.recommendations[0].validated and cost.after < cost.before / 2  # hypopg: the planner uses it


@pytest.mark.needs_hypopg
def test_hypopg_without_execute_privilege_is_one_line_naming_the_grant(demo_dsn, pg_server, demo_conn, cli):
    role = f"advisor_nohypo_{uuid.uuid4().hex[:6]}"
    demo_conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    demo_conn.execute("REVOKE EXECUTE ON FUNCTION hypopg_reset() FROM PUBLIC")
    try:
        reader = pg_server.database_dsn(str(conninfo_to_dict(demo_dsn)["dbname"]), user=role)
        result = cli("--dsn", reader, "advise-indexes", "--min-calls", "3")
        assert result.exit_code == 3
        assert "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public" in result.stderr and "--no-hypopg" in result.stderr
        assert cli("--dsn", reader, "advise-indexes", "--min-calls", "3", "--no-hypopg").exit_code in (0, 1)
    finally:
        demo_conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        demo_conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_hostile_names_in_fix_sql_give_no_superuser(dsn, conn, pg_server, cli, tmp_path):
    """A table owner names a column and an index so that fix.sql, run by a superuser, would make them one."""
    dbname = str(conninfo_to_dict(dsn)["dbname"])
    role = f"lowpriv_{dbname[-8:]}"
    evil = f"email\nALTER ROLE {role} SUPERUSER; --"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        with psycopg.connect(pg_server.database_dsn(dbname, user=role), autocommit=True) as owner:
            owner.execute(
                sql.SQL("CREATE TABLE accounts (id bigint PRIMARY KEY, {} text)").format(sql.Identifier(evil))
            )
            owner.execute("INSERT INTO accounts SELECT n, 'user' || n FROM generate_series(1, 20000) n")
            owner.execute(
                sql.SQL("CREATE INDEX {} ON accounts (id, {})").format(
                    sql.Identifier(f"idx\n{evil}"), sql.Identifier(evil)
                )
            )
            owner.execute("ANALYZE accounts")
        conn.execute("SELECT pg_stat_reset(), pg_stat_statements_reset()")  # the load is not the workload
        with psycopg.connect(pg_server.database_dsn(dbname, user=role), autocommit=True) as owner:
            for n in range(20):
                owner.execute(
                    sql.SQL("SELECT id FROM accounts WHERE {} = %s").format(sql.Identifier(evil)), [f"user{n}"]
                )
        queries = tmp_path / f"queries\n{evil}.sql"
        queries.write_text(
            sql.SQL("SELECT id FROM accounts WHERE {} = 'user7';\n").format(sql.Identifier(evil)).as_string(conn)
        )
        for source in (["--min-calls", "1"], ["--from-file", str(queries)]):
            for (built,) in conn.execute(  # what the previous pass built: the same advice is wanted again
                "SELECT relname FROM pg_class WHERE relname LIKE 'accounts\\_email\\_%' AND relkind = 'i'"
            ).fetchall():
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(built)))
            result = cli("--dsn", dsn, "advise-indexes", "--explain", *source)
            assert result.exit_code == 1, result.stdout  # the index on the hostile column is proposed
            fix = tmp_path / "fix.sql"
            fix.write_text(result.stdout)
            run = _psql(dsn, fix)
            superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            assert superuser == (False,), fix.read_text()
            assert run.returncode == 0, run.stderr
        built = conn.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'accounts'::regclass AND indisvalid"
        ).fetchone()
        assert built is not None and built[0] == 3  # the primary key, the owner's index and the proposed one
    finally:
        conn.execute("DROP TABLE IF EXISTS accounts")
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _own_entries(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = "
        "current_database()) AND (query ~* '^\\s*(explain|prepare|begin read only)' OR query ~* 'hypopg_')"
    ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.needs_hypopg  # without it the advisor runs no EXPLAIN to read back
def test_the_advisor_never_reads_its_own_statements_back(demo_dsn, demo_conn, pg_server):
    demo_conn.execute("SELECT pg_stat_statements_reset()")
    demo.run_workload(demo_dsn, statements=200, clients=1, seed=11)
    # what pgops' functions run (recorded under track = all), as the statements name its schema
    demo_conn.execute("CREATE SCHEMA pgops")
    try:
        demo_conn.execute("CREATE TABLE pgops.refresh_views (view_id int)")
        demo_conn.execute("SELECT count(*) FROM pgops.refresh_views WHERE view_id = 1")
        demo_conn.execute('SELECT count(*) FROM "pgops".refresh_views WHERE view_id = 2')
        read = [s.query for s in read_pg_stat_statements(demo_conn, StatementFilter(min_calls=1, top=1000))]
    finally:
        demo_conn.execute("DROP SCHEMA pgops CASCADE")
    assert read and not [query for query in read if "pgops." in query.lower().replace('"', "")], read
    first = advise(demo_dsn, settings_for(demo_dsn), AdvisorOptions(min_calls=1))
    assert _own_entries(demo_conn) == []  # a superuser turns tracking off for its session
    role = f"advisor_monitor_{uuid.uuid4().hex[:6]}"
    demo_conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE pg_read_all_stats").format(sql.Identifier(role)))
    demo_conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        monitor = pg_server.database_dsn(str(conninfo_to_dict(demo_dsn)["dbname"]), user=role)
        advise(monitor, settings_for(monitor), AdvisorOptions(min_calls=1))
        assert _own_entries(demo_conn)  # this role can't turn tracking off: its EXPLAINs are recorded...
        again = advise(monitor, settings_for(monitor), AdvisorOptions(min_calls=1))
        read_back = [s.query for s in again.skipped] + [q.query for r in again.recommendations for q in r.queries]
        own = re.compile(r"^\s*(/\* pgops \*/|explain|prepare|begin read only)|hypopg|pg_class WHERE oid <", re.I)
        assert [query for query in read_back if own.search(query)] == []  # ...and left out by their shape
        assert again.statements <= first.statements + 3  # the test's own reset and queries may be read
    finally:
        demo_conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        demo_conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_second_run_after_fix_sql_proposes_nothing(demo_dsn, demo_conn, cli, tmp_path):
    """The fixed point: with its own advice applied, the advisor has nothing to add and calls nothing unused."""
    first = cli("--dsn", demo_dsn, "advise-indexes", "--format", "json")
    assert first.exit_code == 1, first.stderr
    built = {r["name"] for r in json.loads(first.stdout)["recommendations"]}
    fix = tmp_path / "fix.sql"
    fix.write_text(cli("--dsn", demo_dsn, "advise-indexes").stdout)
    assert _psql(demo_dsn, fix).returncode == 0
    demo_conn.execute("ANALYZE")
    second = cli("--dsn", demo_dsn, "advise-indexes", "--format", "json")
    advice = json.loads(second.stdout)
    assert second.exit_code == 0, (fix.read_text(), [r["index"] for r in advice["recommendations"]])
    assert advice["recommendations"] == []
    assert not [d for d in advice["drops"] if d["index"].split(".")[1] in built], advice["drops"]


def _run_lookups(dsn: str, calls: int) -> None:
    """`a = $1` `calls` times, the heavy statement, and `b = $1` once, a light one: 0.3% of the time."""
    with psycopg.connect(dsn, autocommit=True) as session:
        for n in range(calls):
            session.execute("SELECT * FROM t WHERE a = %s", [n * 97 % 100_000]).fetchall()
        session.execute("SELECT * FROM t WHERE b = %s", [12_345]).fetchall()


@pytest.mark.needs_hypopg
def test_a_second_run_on_measured_time_judges_against_the_time_before_the_advice(dsn, conn, cli, tmp_path):
    """The fixed point from pg_stat_statements: once the advised index makes the heavy statement fast, the light
    one is most of the measured time left, yet it saved too little before the advice and still does: a
    statement on an index pgops built counts at least as its time before it (which the index's COMMENT tells)."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL, b int NOT NULL, pad text)")
    conn.execute("INSERT INTO t SELECT i, i, i * 7 % 100000, repeat('x', 40) FROM generate_series(1, 100000) i")
    conn.execute("ANALYZE t")
    conn.execute("SELECT pg_stat_statements_reset()")
    _run_lookups(dsn, 300)
    first = cli("--dsn", dsn, "advise-indexes", "--min-calls", "1", "--format", "json")
    assert first.exit_code == 1, first.stderr
    assert [r["candidate"]["columns"] for r in json.loads(first.stdout)["recommendations"]] == [["a"]]
    thresholds = json.loads(first.stdout)["thresholds"]  # the size rule of measured time, and only that one
    assert thresholds["min_saving_per_size"] == "2" and "min_saving_per_mb" not in thresholds
    fix = tmp_path / "fix.sql"
    fix.write_text(cli("--dsn", dsn, "advise-indexes", "--min-calls", "1").stdout)
    assert _psql(dsn, fix).returncode == 0
    comment = conn.execute("SELECT obj_description('t_a_idx'::regclass, 'pg_class')").fetchone()
    assert comment == ("pgops advise-indexes",)
    conn.execute("ANALYZE t")
    conn.execute("SELECT pg_stat_statements_reset()")
    _run_lookups(dsn, 300)
    second = cli("--dsn", dsn, "advise-indexes", "--min-calls", "1", "--format", "json")
    advice = json.loads(second.stdout)
    assert [r["index"] for r in advice["recommendations"]] == [], advice["summary"]
    assert second.exit_code == 0


STAR_QUERIES = """
SELECT d.id FROM dim d WHERE d.region = 3 AND d.budget < (SELECT sum(f.amount) FROM fact f WHERE f.dim_id = d.id);
SELECT sum(amount) FROM fact WHERE sold_date = '2024-03-01';
SELECT count(*), max(amount) FROM fact WHERE sold_date = '2024-07-14';
"""


@pytest.mark.needs_hypopg
def test_a_statements_file_reaches_a_fixed_point_on_a_star_schema(dsn, conn, cli, tmp_path):
    """An analytic case in little: a correlated subquery the planner expects to scan the fact table once per
    dimension row (most of the workload's plan cost) and two date lookups. Its index cuts that cost by 99%,
    after which the date lookups are a large share of what is left: the second run used to propose them. With
    the first run's advice applied, the second proposes nothing."""
    conn.execute("CREATE TABLE dim (id int PRIMARY KEY, region int NOT NULL, budget numeric NOT NULL)")
    conn.execute("INSERT INTO dim SELECT i, i % 50, 1000 FROM generate_series(1, 10000) i")
    conn.execute(
        "CREATE TABLE fact (id bigint PRIMARY KEY, dim_id int NOT NULL, sold_date date NOT NULL, amount numeric)"
    )
    conn.execute(
        "INSERT INTO fact SELECT i, 1 + i / 10, date '2024-01-01' + i % 365, i % 100 FROM generate_series(0, 99999) i"
    )
    conn.execute("ANALYZE")
    queries = tmp_path / "queries.sql"
    queries.write_text(STAR_QUERIES)
    first = cli("--dsn", dsn, "advise-indexes", "--from-file", queries, "--format", "json")
    assert first.exit_code == 1, first.stderr
    proposed = [r["name"] for r in json.loads(first.stdout)["recommendations"]]
    assert "fact_dim_id_idx" in proposed
    thresholds = json.loads(first.stdout)["thresholds"]  # plan costs: the per-MB rule, and only that one
    assert thresholds["min_saving_per_mb"] == "0.05%" and "min_saving_per_size" not in thresholds
    fix = tmp_path / "fix.sql"
    fix.write_text(cli("--dsn", dsn, "advise-indexes", "--from-file", queries).stdout)
    applied = _psql(dsn, fix)
    assert applied.returncode == 0, applied.stderr
    conn.execute("ANALYZE")
    second = cli("--dsn", dsn, "advise-indexes", "--from-file", queries, "--format", "json")
    advice = json.loads(second.stdout)
    assert [r["name"] for r in advice["recommendations"]] == [], proposed
    assert second.exit_code == 0
