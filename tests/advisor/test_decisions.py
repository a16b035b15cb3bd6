"""The advisor's pure decisions on hand-made data: candidates, selection, write cost, names, existing-index
review, workload files and logs, and the values drawn from pg_stats."""

from __future__ import annotations

import dataclasses

from pgops.advisor.candidates import generate, served_by
from pgops.advisor.hypo import realistic_values
from pgops.advisor.model import Analysis, Candidate, Constant
from pgops.advisor.normalize import plannable
from pgops.advisor.parse import analyze
from pgops.advisor.redundant import review
from pgops.advisor.rules import estimate, statement_cost
from pgops.advisor.script import NAME_LIMIT, index_name
from pgops.advisor.select import TableWrites, write_overhead
from pgops.advisor.workload import read_file, read_log, split_statements, timeout_ms
from tests.advisor.helpers import column, demo_catalog, index, statement, table

CATALOG = demo_catalog()
CUSTOMERS, ORDERS = ("public", "customers"), ("public", "orders")


def analyses(*queries: str) -> list[Analysis]:
    found = [analyze(statement(q), CATALOG) for q in queries]
    assert all(isinstance(a, Analysis) for a in found)
    return found  # type: ignore[return-value]


def test_candidates_put_equality_then_range_then_sort_and_shared_columns_first():
    found, _ = generate(
        analyses(
            "SELECT * FROM customers WHERE email = $1 AND tenant_id = $2",
            "SELECT * FROM customers WHERE tenant_id = $1 AND created_at > $2",
            "SELECT * FROM orders WHERE customer_id = $1 AND status = 'open' ORDER BY created_at DESC LIMIT 20",
        ),
        CATALOG,
    )
    columns = {(c.table, c.columns, c.predicate) for c in found}
    # tenant_id is shared by two statements and less distinct: it leads, so one index serves both by prefix
    assert (CUSTOMERS, ("tenant_id", "email"), ()) in columns
    assert (CUSTOMERS, ("tenant_id", "created_at"), ()) in columns
    # equality columns of one statement: the less distinct first (the order does not matter to a lookup)
    assert (ORDERS, ("status", "customer_id", "created_at"), ()) in columns
    # status = 'open' on a column of three values becomes a partial index
    assert (ORDERS, ("customer_id", "created_at"), (Constant("status", "=", "open"),)) in columns


def test_candidates_skip_unique_lookups_unindexable_types_and_existing_indexes():
    catalog = dataclasses.replace(
        CATALOG, indexes=[*CATALOG.indexes, index("orders_cust", ORDERS, ("customer_id", "total"), ("status",))]
    )
    found, rejected = generate(
        analyses(
            "SELECT * FROM orders WHERE id = $1 AND status = $2",  # the primary key finds the row already
            "SELECT id FROM orders WHERE data = $1",  # jsonb has no B-tree operator class
            "SELECT customer_id, status FROM orders WHERE customer_id = $1",  # served, INCLUDE column too
        ),
        catalog,
    )
    assert not [c for c in found if c.columns[0] in ("id", "data")]
    assert not [c for c in found if c.columns == ("customer_id",) and not c.predicate]
    assert any("existing index public.orders_cust serves it" in r.reason for r in rejected)


def test_like_prefix_gets_the_pattern_operator_class_outside_the_c_collation():
    found, _ = generate(analyses("SELECT id FROM customers WHERE tenant_id = $1 AND email LIKE 'ann%'"), CATALOG)
    like = Candidate(CUSTOMERS, ("tenant_id", "email"), (), (), (None, "text_pattern_ops"))
    assert like in found
    assert like.describe() == "public.customers (tenant_id, email text_pattern_ops)"
    plain = index("customers_tenant_email", CUSTOMERS, ("tenant_id", "email"))
    assert served_by(like, [plain]) is None  # the default operator class can't do LIKE outside C
    assert served_by(Candidate(CUSTOMERS, ("tenant_id", "email")), [plain]) is plain
    pattern = index("customers_tenant_email_p", CUSTOMERS, ("tenant_id", "email"), opclasses=(None, "text_pattern_ops"))
    assert served_by(like, [pattern]) is pattern
    assert index_name(like) != index_name(Candidate(CUSTOMERS, ("tenant_id", "email")))


def test_served_by_reads_key_columns_not_include_columns():
    covering = index("orders_status_incl", ORDERS, ("status",), ("customer_id",))
    assert served_by(Candidate(ORDERS, ("customer_id",)), [covering]) is None  # INCLUDE columns are not keys
    assert served_by(Candidate(ORDERS, ("status",), ("customer_id",)), [covering]) is covering
    expression = index("orders_lower", ORDERS, (None, "status"))
    assert served_by(Candidate(ORDERS, ("status",)), [expression]) is None
    partial = index("orders_open", ORDERS, ("status",), predicate="(status = 'open'::text)")
    assert served_by(Candidate(ORDERS, ("status",)), [partial]) is None


def test_write_overhead_counts_inserts_updates_and_lost_hot_updates():
    orders = CATALOG.tables[ORDERS]  # 90% of its updates are HOT; one index
    writes = TableWrites(inserted=100, updated=1000, updated_columns={"status"})
    entries, ms, ends_hot = write_overhead(orders, Candidate(ORDERS, ("customer_id",)), writes, 0.01)
    assert (entries, ends_hot) == (100 + 100, False)
    assert ms == entries * 0.01
    entries, _, ends_hot = write_overhead(orders, Candidate(ORDERS, ("status", "created_at")), writes, 0.01)
    assert ends_hot and entries == 100 + 100 + 900 * 2  # each formerly HOT update now writes every index


def test_index_names_are_deterministic_distinct_and_fit_63_bytes():
    plain = Candidate(ORDERS, ("customer_id", "created_at"))
    partial = Candidate(ORDERS, ("created_at",), (), (Constant("status", "=", "open"),))
    long = Candidate(("public", "a" * 60), tuple(f"column_{n}_with_a_long_name" for n in range(4)))
    assert index_name(plain) == "orders_customer_id_created_at_idx"
    assert index_name(partial) == index_name(dataclasses.replace(partial))
    assert index_name(partial) != index_name(Candidate(ORDERS, ("created_at",)))
    assert len(index_name(long).encode()) <= NAME_LIMIT
    assert index_name(long) != index_name(dataclasses.replace(long, columns=long.columns[:3]))


def test_review_finds_duplicate_redundant_unused_and_invalid_but_spares_constraints():
    catalog = dataclasses.replace(
        CATALOG,
        indexes=[
            *CATALOG.indexes,
            index("a_dup1", ORDERS, ("status",), scans=5),
            index("a_dup2", ORDERS, ("status",), scans=5),
            index("b_pair", ORDERS, ("customer_id", "created_at"), scans=5),
            index("b_prefix", ORDERS, ("customer_id",), scans=5),
            index("c_unused", CUSTOMERS, ("name",), scans=0),
            index("d_invalid", CUSTOMERS, ("email",), valid=False),
            index("e_unique_prefix", ORDERS, ("customer_id",), unique=True, scans=0),
        ],
    )
    kinds = {s.index: s.kind for s in review(catalog)}
    assert kinds["public.a_dup2"] == "duplicate"  # of a_dup1, which is kept
    assert kinds["public.b_prefix"] == "redundant"
    assert kinds["public.c_unused"] == "unused"
    assert kinds["public.d_invalid"] == "invalid"
    assert "public.e_unique_prefix" not in kinds and "public.orders_pkey" not in kinds
    assert "public.b_pair" not in kinds and "public.a_dup1" not in kinds


def test_rules_estimate_a_selective_equality_as_cheaper_and_ignore_unrelated_indexes():
    lookup = analyses("SELECT * FROM customers WHERE tenant_id = $1 AND email = $2")[0]
    before = statement_cost(lookup, CATALOG)
    assert estimate(lookup, Candidate(CUSTOMERS, ("tenant_id", "email")), CATALOG) < before * 0.1
    assert estimate(lookup, Candidate(CUSTOMERS, ("created_at",)), CATALOG) == before
    open_orders = analyses("SELECT * FROM orders WHERE status = 'open' ORDER BY created_at DESC LIMIT 20")[0]
    partial = Candidate(ORDERS, ("created_at",), (), (Constant("status", "=", "open"),))
    other_partial = Candidate(ORDERS, ("created_at",), (), (Constant("status", "=", "closed"),))
    assert estimate(open_orders, partial, CATALOG) < statement_cost(open_orders, CATALOG)
    assert estimate(open_orders, other_partial, CATALOG) == statement_cost(open_orders, CATALOG)


def test_realistic_values_come_from_pg_stats():
    analysis = analyses("SELECT * FROM orders WHERE status = $1 AND created_at > $2 AND status = ANY($3) LIMIT $4")[0]
    values = realistic_values(analysis, CATALOG, 4)
    assert values is not None
    assert values[0] == "open"  # the least common of the common values
    assert values[1] == "2024-01-28"  # the recent tail of the histogram
    assert values[3] == "20"
    assert values[2] == '{"open"}'  # an array for = ANY($3)
    no_stats = analyses("SELECT * FROM orders WHERE total = $1")[0]  # total has no pg_stats here
    assert realistic_values(no_stats, CATALOG, 1) is None
    assert plannable("SELECT 1 WHERE now() - interval $1 > $2;") == "SELECT 1 WHERE now() - $1::interval > $2"


def test_split_statements_respects_quotes_dollar_quotes_and_comments():
    text = "SELECT ';' AS a; -- c;\nSELECT $$x;y$$; /* ; */ SELECT \"a;b\" FROM t;\n;  "
    assert split_statements(text) == ["SELECT ';' AS a", "-- c;\nSELECT $$x;y$$", '/* ; */ SELECT "a;b" FROM t']


def test_read_file_counts_repeated_statements_as_calls(tmp_path):
    path = tmp_path / "workload.sql"
    path.write_text(
        "SELECT * FROM orders WHERE id = 1;\nselect * from orders where id = 2;\nSELECT * FROM orders  WHERE id = 1;"
    )
    statements = read_file(path)
    assert [(s.query, s.calls) for s in statements] == [
        ("SELECT * FROM orders WHERE id = 1", 2),
        ("select * from orders where id = 2", 1),
    ]


def test_read_log_takes_slow_statements_parameters_and_cancelled_ones(tmp_path):
    path = tmp_path / "postgresql.log"
    path.write_text(
        "2026-11-23 10:00:00.000 UTC [101] LOG:  duration: 1500.250 ms  statement: SELECT *\n"
        "\tFROM orders WHERE customer_id = 5\n"
        "2026-11-23 10:00:01.000 UTC [102] LOG:  duration: 20.000 ms  execute <unnamed>: "
        "SELECT * FROM customers WHERE tenant_id = $1 AND email = $2\n"
        "2026-11-23 10:00:01.000 UTC [102] DETAIL:  parameters: $1 = '3', $2 = 'o''brien@x'\n"
        "2026-11-23 10:00:02.000 UTC [103] ERROR:  canceling statement due to statement timeout\n"
        "2026-11-23 10:00:02.000 UTC [103] STATEMENT:  SELECT count(*) FROM orders WHERE status = 'open'\n"
        "2026-11-23 10:00:03.000 UTC [104] LOG:  checkpoint starting: time\n"
    )
    statements = {s.query: s for s in read_log(path)}
    assert statements["SELECT *\nFROM orders WHERE customer_id = 5"].total_time_ms == 1500.25
    assert "SELECT * FROM customers WHERE tenant_id = '3' AND email = 'o''brien@x'" in statements
    cancelled = statements["SELECT count(*) FROM orders WHERE status = 'open'"]
    assert cancelled.cancelled and cancelled.total_time_ms == 1500.25
    assert len(statements) == 3
    # it ran until the statement_timeout in force cancelled it: at least that long
    statements = {s.query: s for s in read_log(path, cancel_after_ms=30_000.0)}
    assert statements["SELECT count(*) FROM orders WHERE status = 'open'"].total_time_ms == 30_000.0


def test_statement_timeouts_read_as_postgresql_writes_them():
    assert [timeout_ms(t) for t in ("30s", "'5min'", "30000", "250ms", "1h", "0", None, "soon")] == [
        30_000.0,
        300_000.0,
        30_000.0,
        250.0,
        3_600_000.0,
        0.0,
        0.0,
        0.0,
    ]


def test_read_log_reads_csvlog_and_jsonlog_and_keeps_only_this_database(tmp_path):
    def csv_row(database, severity, message, detail="", query=""):
        row = ["2026-11-23 10:00:00 UTC", "app", database, "1", "", "s", "1", "SELECT", "", "", "0", severity]
        row += ["00000", message, detail, "", "", "", "", query, "", "", "app", "client backend", "", "0"]
        return ",".join('"' + value.replace('"', '""') + '"' for value in row)

    csv_log = tmp_path / "postgresql.csv"
    csv_log.write_text(
        "\n".join(
            [
                csv_row(
                    "app",
                    "LOG",
                    "duration: 12.5 ms  execute <unnamed>: SELECT * FROM t WHERE a = $1",
                    "parameters: $1 = '7'",
                ),
                csv_row("other", "LOG", "duration: 99.0 ms  statement: SELECT * FROM elsewhere"),
                csv_row("app", "ERROR", "canceling statement due to statement timeout", query="SELECT\n slow()"),
            ]
        )
        + "\n"
    )
    statements = {s.query: s for s in read_log(csv_log, "app")}
    assert set(statements) == {"SELECT * FROM t WHERE a = '7'", "SELECT\n slow()"}
    assert statements["SELECT\n slow()"].cancelled and statements["SELECT\n slow()"].total_time_ms == 12.5

    json_log = tmp_path / "postgresql.json"
    json_log.write_text(
        '{"dbname": "app", "error_severity": "LOG", "message": "duration: 3.0 ms  statement: SELECT 1 FROM t"}\n'
        '{"dbname": "app", "error_severity": "ERROR", "message": "canceling statement due to statement timeout",'
        ' "statement": "SELECT 2 FROM t"}\n'
        '{"dbname": "other", "error_severity": "LOG", "message": "duration: 5.0 ms  statement: SELECT 3"}\n'
        "not json\n"
    )
    assert sorted(s.query for s in read_log(json_log, "app")) == ["SELECT 1 FROM t", "SELECT 2 FROM t"]


def test_two_join_columns_of_one_table_become_a_composite_key_in_both_orders():
    lineitem = table(
        "public",
        "lineitem",
        3_000_000,
        [column("l_orderkey"), column("l_partkey", 100_000), column("l_suppkey", 5_000), column("l_quantity", 50)],
    )
    partsupp = table("public", "partsupp", 400_000, [column("ps_partkey", 100_000), column("ps_suppkey", 5_000)])
    catalog = dataclasses.replace(CATALOG, tables={t.key: t for t in (lineitem, partsupp)}, indexes=[])
    query = "SELECT sum(l_quantity) FROM lineitem JOIN partsupp ON l_partkey = ps_partkey AND l_suppkey = ps_suppkey"
    found, _ = generate([analyze(statement(query), catalog)], catalog)
    keys = {c.columns for c in found if c.table == ("public", "lineitem") and not c.include}
    assert {("l_partkey", "l_suppkey"), ("l_suppkey", "l_partkey"), ("l_partkey",), ("l_suppkey",)} <= keys


def test_an_index_name_already_taken_is_not_proposed_again():
    candidate = Candidate(ORDERS, ("customer_id",))
    plain = index_name(candidate)
    assert plain == "orders_customer_id_idx"
    other = index_name(candidate, {plain})  # a partial or broken index of that name exists: IF NOT EXISTS would skip
    assert other != plain and other.startswith("orders_customer_id_") and len(other.encode()) <= NAME_LIMIT
    assert index_name(candidate, {plain, other}) not in {plain, other}
