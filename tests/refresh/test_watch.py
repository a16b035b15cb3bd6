"""Registration: dependency discovery, triggers, refusals with their reasons, and the CLI."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from psycopg import sql

from pgops import migrate
from pgops.errors import PgopsError
from pgops.refresh import process, queue, watch
from tests.refresh.conftest import FAST, differs_from_query, settings_for


def _triggers(conn) -> dict[str, list[str]]:
    """Table → the view ids of pgops' triggers on it (each calls its view's trigger function)."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname, array_agg(substr(p.proname, 14) ORDER BY p.proname::text COLLATE \"C\") "
        "FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE p.pronamespace = 'pgops'::regnamespace AND p.proname LIKE 'refresh_mark_%' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    return dict(rows)


def test_finds_base_tables_through_views_matviews_and_partitions(conn, installed):
    conn.execute(
        """
        CREATE TABLE regions (id integer PRIMARY KEY, name text);
        CREATE TABLE sales (region_id integer, sold_on date, amount numeric) PARTITION BY RANGE (sold_on);
        CREATE TABLE sales_2025 PARTITION OF sales FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE sales_2026 PARTITION OF sales FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        CREATE TABLE unrelated (id integer);
        CREATE VIEW named_sales AS SELECT r.name, s.amount FROM sales s JOIN regions r ON r.id = s.region_id;
        CREATE MATERIALIZED VIEW region_totals AS SELECT name, sum(amount) AS total FROM named_sales GROUP BY name;
        CREATE UNIQUE INDEX ON region_totals (name);
        CREATE MATERIALIZED VIEW grand_total AS SELECT 1 AS k, sum(total) AS total FROM region_totals;
        CREATE UNIQUE INDEX ON grand_total (k);
        """
    )
    totals = watch.watch(conn, "region_totals", installed.refresh)
    grand = watch.watch(conn, "public.grand_total", installed.refresh)
    expected = ["public.regions", "public.sales", "public.sales_2025", "public.sales_2026"]
    assert totals.base_tables == expected and grand.base_tables == expected
    triggers = _triggers(conn)
    assert sorted(triggers) == expected
    assert all(ids == [str(totals.view_id), str(grand.view_id)] for ids in triggers.values())

    # a write to a partition marks both views; refreshing region_totals makes grand_total stale again
    process.refresh_now(conn, "region_totals", installed.refresh)
    process.refresh_now(conn, "grand_total", installed.refresh)
    conn.execute("INSERT INTO regions VALUES (1, 'north')")
    conn.execute("INSERT INTO sales_2026 VALUES (1, '2026-05-01', 10)")
    marked = conn.execute("SELECT array_agg(DISTINCT view_id ORDER BY view_id) FROM pgops.refresh_marks").fetchone()
    assert marked[0] == [totals.view_id, grand.view_id]

    assert watch.unwatch(conn, "region_totals", installed.refresh) is True
    assert all(ids == [str(grand.view_id)] for ids in _triggers(conn).values())
    assert watch.unwatch(conn, "grand_total", installed.refresh) is True
    assert _triggers(conn) == {}
    assert watch.unwatch(conn, "grand_total", installed.refresh) is False
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'refresh_mark_%'").fetchone()[0] == 0


def test_refuses_concurrently_without_a_usable_unique_index(conn, installed):
    conn.execute("CREATE TABLE t (id integer, grp integer)")
    conn.execute("CREATE MATERIALIZED VIEW by_grp AS SELECT grp, count(*) AS n FROM t GROUP BY grp")
    conn.execute("CREATE UNIQUE INDEX ON by_grp (grp) WHERE grp > 0")  # partial: unusable
    conn.execute("CREATE UNIQUE INDEX ON by_grp ((grp + 1))")  # expression: unusable
    with pytest.raises(PgopsError, match=r"no unique index on plain columns.*--no-concurrently"):
        watch.watch(conn, "by_grp", installed.refresh)
    assert queue.watched_views(conn) == [] and _triggers(conn) == {}
    plain = watch.watch(conn, "by_grp", installed.refresh, concurrently=False)
    assert plain.refresh_concurrently is False


@pytest.mark.parametrize(
    ("setup", "view", "message"),
    [
        ("CREATE TABLE t (id integer)", "public.nope", "does not exist"),
        ("CREATE TABLE t (id integer); CREATE VIEW v AS SELECT * FROM t", "v", "is not a materialized view"),
        ("CREATE MATERIALIZED VIEW c AS SELECT 1 AS k", "c", "reads no table"),
    ],
)
def test_refusals_say_why(conn, installed, setup, view, message):
    conn.execute(setup)
    with pytest.raises(PgopsError, match=message):
        watch.watch(conn, view, installed.refresh, concurrently=False)


def test_a_view_owned_by_another_role_names_its_owner(conn, pg_server, dbname, installed):
    suffix = uuid.uuid4().hex[:8]
    owner, other = f"pgops_owner_{suffix}", f"pgops_other_{suffix}"
    for role in (owner, other):
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)))
    try:
        conn.execute("CREATE TABLE t (id integer PRIMARY KEY)")
        conn.execute("CREATE MATERIALIZED VIEW ids AS SELECT id FROM t")
        conn.execute(sql.SQL("ALTER MATERIALIZED VIEW ids OWNER TO {}").format(sql.Identifier(owner)))
        conn.execute(sql.SQL("GRANT TRIGGER ON t TO {}").format(sql.Identifier(other)))
        other_dsn = pg_server.database_dsn(dbname, user=other, password="pw")
        if pg_server.version_num >= 170000:  # MAINTAIN on the view would do too
            refusal = f"role {other} may not refresh ids \\(owned by role {owner}\\): GRANT MAINTAIN ON ids TO {other}"
        else:
            refusal = f"ids is owned by role {owner}, and only its owner may refresh it: .*GRANT {owner} TO {other}"
        with (
            psycopg.connect(other_dsn, autocommit=True) as as_other,
            pytest.raises(PgopsError, match=refusal),
        ):
            watch.watch(as_other, "ids", installed.refresh, concurrently=False)
    finally:
        conn.execute("DROP MATERIALIZED VIEW IF EXISTS ids")
        conn.execute("DROP TABLE IF EXISTS t")
        for role in (owner, other):
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_maintain_lets_a_role_that_does_not_own_the_view_watch_and_refresh_it_from_17(conn, pg_server, dbname):
    """From PostgreSQL 17 the MAINTAIN privilege (GRANT MAINTAIN ON the view, or membership in pg_maintain) lets a
    role refresh a view it does not own, so pgops lets it watch one; before 17 only the owner may, and pgops says
    whose role to GRANT. The refreshing role runs pgops' migration, as the README asks."""
    suffix = uuid.uuid4().hex[:8]
    owner, ops = f"pgops_appowner_{suffix}", f"pgops_ops_{suffix}"
    for role in (owner, ops):
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(dbname), sql.Identifier(ops)))
    grants = ["GRANT MAINTAIN ON {view} TO {ops}", "GRANT pg_maintain TO {ops}"]
    for number in range(len(grants)):  # a table and a view of its own for each grant: only owners drop triggers
        conn.execute(
            f"CREATE TABLE t{number} (id integer PRIMARY KEY, n integer); INSERT INTO t{number} VALUES (1, 1);"
            f"CREATE MATERIALIZED VIEW v{number} AS SELECT id, n FROM t{number};"
            f"CREATE UNIQUE INDEX ON v{number} (id);"
        )
        for relation in (f"t{number}", f"v{number}"):
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(relation), sql.Identifier(owner)))
        conn.execute(sql.SQL("GRANT TRIGGER ON {} TO {}").format(sql.Identifier(f"t{number}"), sql.Identifier(ops)))
    ops_dsn = pg_server.database_dsn(dbname, user=ops, password="pw")
    try:
        migrate.upgrade(ops_dsn, settings_for(ops_dsn))
        with psycopg.connect(ops_dsn, autocommit=True) as as_ops:
            if pg_server.version_num < 170000:
                with pytest.raises(PgopsError, match=f"v0 is owned by role {owner}.*GRANT {owner} TO {ops}$"):
                    watch.watch(as_ops, "v0", FAST)
                return
            with pytest.raises(PgopsError, match=f"GRANT MAINTAIN ON v0 TO {ops}, or GRANT pg_maintain TO {ops}, or"):
                watch.watch(as_ops, "v0", FAST)
            for number, grant in enumerate(grants):
                view = f"v{number}"
                conn.execute(grant.format(view=view, ops=ops))
                assert watch.watch(as_ops, view, FAST).refresh_concurrently
                conn.execute(f"UPDATE t{number} SET n = 2")
                assert differs_from_query(conn, f"public.{view}") > 0
                assert process.refresh_now(as_ops, view, FAST).outcome == "refreshed"  # CONCURRENTLY
                assert differs_from_query(conn, f"public.{view}") == 0
    finally:
        for role in (owner, ops):
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_sql_function_registers_like_the_cli(conn, fund_stats, installed):
    """A user's own migration can call pgops.watch()."""
    view_id = conn.execute("SELECT pgops.watch('fund_stats', interval '10 seconds', interval '1 minute')").fetchone()[0]
    (view,) = queue.watched_views(conn)
    assert (view.view_id, view.name, view.debounce.total_seconds()) == (view_id, "public.fund_stats", 10)
    assert sorted(_triggers(conn)) == ["public.funds", "public.trades"]


def test_cli_watch_status_now_unwatch(cli, dsn, conn, fund_stats):
    watched = cli(
        "--dsn", dsn, "refresh", "watch", fund_stats, "--debounce", "1h", "--max-wait", "2h", "--format", "json"
    )
    assert watched.exit_code == 0, watched.stderr
    assert json.loads(watched.stdout)["base_tables"] == ["public.funds", "public.trades"]

    status = cli("--dsn", dsn, "refresh", "status", "--format", "json")
    assert status.exit_code == 0, status.stderr
    (row,) = json.loads(status.stdout)
    assert row["view"] == "public.fund_stats" and row["stale_since"] and row["refresh_count"] == 0

    now = cli("--dsn", dsn, "refresh", "now", "fund_stats")
    assert now.exit_code == 0 and "refreshed public.fund_stats" in now.stdout

    table = cli("--dsn", dsn, "refresh", "status")
    assert table.exit_code == 0 and "public.fund_stats" in table.stdout and "fresh" in table.stdout

    bad = cli("--dsn", dsn, "refresh", "watch", fund_stats, "--debounce", "soon")
    assert bad.exit_code == 3 and "--debounce" in bad.stderr

    conn.execute("UPDATE pgops.refresh_views SET failure_count = 2, last_error = 'boom'")
    failing = cli("--dsn", dsn, "refresh", "status")
    assert failing.exit_code == 2 and "boom" in failing.stdout

    assert cli("--dsn", dsn, "refresh", "unwatch", fund_stats).exit_code == 0
    again = cli("--dsn", dsn, "refresh", "unwatch", fund_stats)
    assert again.exit_code == 1 and "was not watched" in again.stderr
    missing = cli("--dsn", dsn, "refresh", "now", fund_stats)
    assert missing.exit_code == 3 and "not a watched materialized view" in missing.stderr


def test_cli_says_when_pgops_is_not_installed(cli, dsn):
    result = cli("--dsn", dsn, "refresh", "status")
    assert result.exit_code == 3 and "pgops migrate" in result.stderr


def test_an_application_role_with_only_table_grants_writes_through_the_trigger(conn, pg_server, dbname, fund_stats):
    """Writers need no grant of pgops' own: the trigger's mark and flag read are open to every role."""
    role = f"pgops_writer_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON trades TO {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        watch.watch(conn, fund_stats, FAST)
        process.refresh_now(conn, fund_stats, FAST)  # clean: the next write marks
        with psycopg.connect(pg_server.database_dsn(dbname, user=role, password="pw"), autocommit=True) as app:
            app.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 1)")
            app.execute("UPDATE trades SET amount = 2 WHERE fund_id = 1")
        assert conn.execute("SELECT count(*) FROM pgops.refresh_marks").fetchone()[0] == 2
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["watch", "a.b.c.d"], "'a.b.c.d' is not a view name: 4 dotted parts"),
        (["now", "a.b.c"], "'a.b.c' is not a view name: 3 dotted parts"),
        (["now", "x'; DROP TABLE victim; --"], 'is not a view name: unexpected "\'"'),
        (["watch", "x'; DROP TABLE victim; --"], "is not a view name"),
        (["unwatch", '"victim; DROP TABLE victim; --'], "is not a view name: a quoted name is not closed"),
        (["now", '"victim"; DROP TABLE victim'], "is not a view name: unexpected ';'"),
        (["watch", "nowhere.fund_stats"], "nowhere.fund_stats does not exist"),
        (["now", "no_such_view"], "no_such_view does not exist"),
        (["now", '"Fund_Stats"'], '"Fund_Stats" does not exist'),
    ],
)
def test_cli_bad_view_names_are_one_line_and_run_nothing(cli, dsn, conn, fund_stats, args, message):
    """A view name is parsed as [schema.]name and looked up as a parameter: never an exception, never executed."""
    conn.execute("CREATE TABLE victim (id integer)")
    result = cli("--dsn", dsn, "refresh", *args)
    assert result.exit_code == 3 and "internal error" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("pgops: error: ") and message in line, line
    assert conn.execute("SELECT to_regclass('victim') IS NOT NULL").fetchone()[0]


def test_quoted_and_folded_names_reach_the_same_view(conn, installed):
    conn.execute('CREATE SCHEMA "Odd Schema"')
    conn.execute('CREATE TABLE "Odd Schema".t (id integer PRIMARY KEY)')
    conn.execute('CREATE MATERIALIZED VIEW "Odd Schema"."My.View" AS SELECT id FROM "Odd Schema".t')
    view = watch.watch(conn, ' "Odd Schema" . "My.View" ', installed.refresh, concurrently=False)
    assert (view.schema_name, view.view_name) == ("Odd Schema", "My.View")
    assert process.refresh_now(conn, '"Odd Schema"."My.View"', installed.refresh).outcome == process.REFRESHED
    with pytest.raises(PgopsError, match=r'"odd schema"\."my\.view" does not exist'):
        process.refresh_now(conn, '"odd schema"."my.view"', installed.refresh)
    assert watch.unwatch(conn, '"Odd Schema"."My.View"', installed.refresh) is True
