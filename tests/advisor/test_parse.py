"""Parser and extractor on a hand-made catalog: what each statement asks of each table, and that nothing
raises on real-world or random text."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from pgops.advisor.model import (
    SKIP_MISSING_RELATION,
    SKIP_MULTIPLE,
    SKIP_PRIVILEGE,
    SKIP_SYNTAX,
    SKIP_TOO_LARGE,
    SKIP_UTILITY,
    Analysis,
    Constant,
    ParamUse,
    Skipped,
)
from pgops.advisor.parse import MAX_STATEMENT_CHARS, MAX_STATEMENT_NODES, analyze, parse
from pgops.advisor.scope_columns import ScopeColumns
from tests.advisor.helpers import demo_catalog, statement

CATALOG = demo_catalog()
CUSTOMERS, ORDERS = ("public", "customers"), ("public", "orders")


def use(query: str) -> Analysis:
    result = analyze(statement(query), CATALOG)
    assert isinstance(result, Analysis), result
    return result


def test_aliases_unqualified_columns_joins_and_sort_resolve_to_their_tables():
    result = use(
        "SELECT o.id, o.total FROM orders o JOIN customers AS c ON c.id = o.customer_id "
        "WHERE c.tenant_id = $1 AND email = $2 AND o.created_at > $3 ORDER BY o.created_at DESC LIMIT $4"
    )
    customers, orders = result.tables[CUSTOMERS], result.tables[ORDERS]
    assert customers.equality == ["tenant_id", "email"]
    assert customers.join == ["id"]
    assert orders.join == ["customer_id"]
    assert orders.range == ["created_at"]
    assert orders.sort == ["created_at"]
    assert result.has_limit
    assert result.params == {
        1: ParamUse(CUSTOMERS, "tenant_id", "="),
        2: ParamUse(CUSTOMERS, "email", "="),
        3: ParamUse(ORDERS, "created_at", ">"),
        4: ParamUse(None, None, "limit"),
    }


def test_in_any_between_is_null_like_and_constants():
    result = use(
        "SELECT id FROM orders WHERE customer_id = ANY($1) AND status IN ('open', 'shipped') "
        "AND total BETWEEN $2 AND $3 AND created_at IS NULL AND status = 'open'"
    )
    orders = result.tables[ORDERS]
    assert orders.equality == ["customer_id", "status", "created_at"]
    assert orders.range == ["total"]
    assert Constant("created_at", "IS NULL") in orders.constants
    assert Constant("status", "=", "open") in orders.constants
    assert result.params[1] == ParamUse(ORDERS, "customer_id", "any")
    assert result.params[2].op == "between_low" and result.params[3].op == "between_high"
    like = use("SELECT id FROM customers WHERE email LIKE 'abc%' AND name LIKE '%x'").tables[CUSTOMERS]
    assert like.like == ["email"] and like.range == []  # a prefix pattern can use a B-tree; "%x" can't


def test_ctes_subqueries_and_correlated_columns():
    result = use(
        "WITH recent AS (SELECT customer_id, count(*) n FROM orders WHERE created_at >= $1 GROUP BY customer_id) "
        "SELECT c.email FROM customers c WHERE c.tenant_id = $2 AND EXISTS "
        "(SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.status = $3) "
        "AND c.id IN (SELECT customer_id FROM recent)"
    )
    orders = result.tables[ORDERS]
    assert "created_at" in orders.range and orders.group == ["customer_id"]
    assert "customer_id" in orders.join and "status" in orders.equality
    assert result.tables[CUSTOMERS].equality == ["tenant_id"]
    assert "id" in result.tables[CUSTOMERS].join


def test_schema_qualified_names_quoting_and_search_path():
    result = use('SELECT * FROM audit.events e WHERE e."kind" = $1 AND CUSTOMER_ID = $2')
    events = result.tables[("audit", "events")]
    assert events.equality == ["kind", "customer_id"] and events.star
    assert isinstance(analyze(statement("SELECT * FROM events"), CATALOG), Skipped)  # audit is not on search_path


def test_update_delete_and_insert_select():
    update = use("UPDATE orders SET status = $1, total = total + 1 WHERE id = $2 AND customer_id = $3")
    assert update.kind == "update"
    assert update.tables[ORDERS].updated == {"status", "total"}
    assert update.tables[ORDERS].equality == ["id", "customer_id"]
    delete = use("DELETE FROM orders o USING customers c WHERE c.id = o.customer_id AND c.tenant_id = $1")
    assert delete.kind == "delete" and delete.tables[CUSTOMERS].equality == ["tenant_id"]
    insert = use("INSERT INTO orders (customer_id, total) SELECT id, 0 FROM customers WHERE tenant_id = $1")
    assert insert.kind == "insert" and insert.tables[CUSTOMERS].equality == ["tenant_id"]


def test_unusable_statements_are_skipped_with_a_reason():
    cases = {
        "<insufficient privilege>": SKIP_PRIVILEGE,
        "CREATE INDEX ON orders (status)": SKIP_UTILITY,
        "BEGIN": SKIP_UTILITY,
        "SELECT id, status FROM orders WHERE customer_id = $1 AND created_at >": SKIP_SYNTAX,  # truncated
        "SELECT * FROM dropped_table WHERE x = 1": SKIP_MISSING_RELATION,
        "SELECT 1; SELECT 2": SKIP_MULTIPLE,
    }
    for query, reason in cases.items():
        result = analyze(statement(query, calls=7, total_time_ms=70.0), CATALOG)
        assert isinstance(result, Skipped), query
        assert result.reason == reason, (query, result)
        assert result.calls == 7  # the skipped statement's weight is kept for the summary


def test_sqlglot_log_lines_never_reach_the_root_logger(caplog):
    caplog.set_level(logging.DEBUG)
    # sqlglot logs "Applying array index offset" at INFO while parsing a subscript
    result = analyze(statement("SELECT (array_agg(id))[1] FROM orders WHERE customer_id = $1"), CATALOG)
    assert isinstance(result, Analysis)
    assert [record.getMessage() for record in caplog.records if record.name.startswith("sqlglot")] == []


def test_a_statement_over_the_size_limits_is_skipped_with_the_limit_it_broke():
    in_list = "SELECT id FROM orders WHERE customer_id IN (" + ", ".join(["1234567"] * 10_000) + ")"
    at_limit = analyze(statement(in_list.ljust(MAX_STATEMENT_CHARS)), CATALOG)
    assert isinstance(at_limit, Analysis) and at_limit.tables[ORDERS].equality == ["customer_id"]
    over = [in_list.ljust(MAX_STATEMENT_CHARS + 1), "SELECT 1 WHERE 1 IN (" + "1," * 2_500_000 + "1)"]
    cases = [(text, f"{len(text):,} characters, over the limit of 100,000") for text in over]
    dense = "SELECT id FROM orders WHERE " + " OR ".join(["id=1"] * 12_000)  # five syntax nodes per term
    assert len(dense) < MAX_STATEMENT_CHARS and MAX_STATEMENT_NODES == 50_000
    cases.append((dense, "over the limit of 50,000 syntax nodes"))
    for text, detail in cases:
        skipped = analyze(statement(text, calls=7, total_time_ms=70.0), CATALOG)
        assert isinstance(skipped, Skipped), detail
        assert (skipped.reason, skipped.detail) == (SKIP_TOO_LARGE, detail)
        assert (skipped.calls, skipped.total_time_ms) == (7, 70.0)  # its weight still counts in the summary
        assert skipped.query == text[:1000] + "…"  # --explain and the JSON show its beginning, not megabytes


def test_a_run_of_comments_before_a_non_keyword_is_skipped_promptly():
    """The first-word regex once backtracked exponentially over leading comments: run it in a child process, so
    a regression fails at the deadline instead of hanging the suite."""
    probe = (
        "from pgops.advisor.parse import parse\n"
        "for text in ('/**/' * 40 + '1', '/* a */ ' * 40 + '1', '/* x */ -- y\\n' * 40 + '(1)'):\n"
        "    print(parse(text).detail)\n"
        "print(type(parse('/* a */ ' * 40 + 'SELECT 1')).__name__)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["no statement keyword"] * 3 + ["Select"]


def _corpus() -> list[str]:
    lines = (Path(__file__).parent / "corpus.sql").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("--")]


def test_corpus_of_real_statements_never_raises_and_counts_skips_by_reason():
    results = [analyze(statement(query), CATALOG) for query in _corpus()]
    reasons = Counter(r.reason for r in results if isinstance(r, Skipped))
    analyzed = [r for r in results if isinstance(r, Analysis)]
    assert len(analyzed) >= 10  # the ORM, CTE and DML statements on known tables
    assert reasons[SKIP_UTILITY] >= 15
    assert reasons[SKIP_SYNTAX] >= 3
    assert reasons[SKIP_PRIVILEGE] == 1
    assert reasons[SKIP_MISSING_RELATION] >= 3  # TPC-H tables and friends are not in this catalog
    orm = next(r for r in analyzed if '"orders"."status" IN' in r.statement.query)
    assert orm.tables[CUSTOMERS].equality == ["tenant_id"] and orm.tables[ORDERS].sort == ["created_at"]


def test_a_long_and_chain_is_analyzed_not_nested_too_deeply():
    terms = " AND ".join(f"total <> {n}" for n in range(3000))
    result = analyze(
        statement(f"SELECT id FROM orders WHERE customer_id = $1 AND {terms} AND status = 'open'"), CATALOG
    )
    assert isinstance(result, Analysis), result
    assert result.tables[ORDERS].equality == ["customer_id", "status"]
    assert Constant("status", "=", "open") in result.tables[ORDERS].constants


_CORRELATED = [
    "SELECT c.email FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE customer_id = c.id AND total > 1) "
    "ORDER BY email",
    "SELECT DISTINCT status AS s FROM orders ORDER BY s, created_at",
    "SELECT o.id FROM orders o, LATERAL (SELECT e.kind FROM audit.events e WHERE e.customer_id = o.customer_id) l",
    "SELECT id FROM orders UNION SELECT id FROM customers c WHERE tenant_id IN (SELECT 1 FROM orders WHERE id = c.id)",
    "SELECT o.*, count(*) OVER (PARTITION BY status ORDER BY total) FROM orders o GROUP BY 1 HAVING sum(total) > 1",
]


def _same_columns_as_sqlglot(query: str) -> None:
    tree = parse(query)
    assert isinstance(tree, exp.Expression), tree
    ours = ScopeColumns()
    for scope in traverse_scope(tree):
        assert [id(c) for c in ours.of(scope)] == [id(c) for c in scope.columns], (query, scope.expression.sql())


def test_scope_columns_select_exactly_what_sqlglot_selects():
    """The linear column selection is sqlglot's own, object for object (a guard for sqlglot upgrades)."""
    for query in _CORRELATED + [q for q in _corpus() if isinstance(analyze(statement(q), CATALOG), Analysis)]:
        _same_columns_as_sqlglot(query)


_WORDS = st.sampled_from(
    [
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "JOIN",
        "ON",
        "USING",
        "WITH",
        "AS",
        "IN",
        "ANY",
        "BETWEEN",
        "IS",
        "NULL",
        "LIKE",
        "ORDER",
        "BY",
        "GROUP",
        "LIMIT",
        "OFFSET",
        "UPDATE",
        "SET",
        "DELETE",
        "INSERT",
        "INTO",
        "VALUES",
        "orders",
        "customers",
        "o",
        "c",
        "o.id",
        "c.id",
        "customer_id",
        "tenant_id",
        "email",
        "status",
        "created_at",
        "*",
        "=",
        "<",
        ">=",
        ",",
        "(",
        ")",
        "$1",
        "$2",
        "'open'",
        "42",
        "'x%'",
        ";",
        "::int",
        "EXISTS",
        "DESC",
        "audit.events",
        '"Quoted"',
        "--",
        "/*",
        "*/",
        "$$",
        "E'\\\\'",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_WORDS, max_size=30).map(" ".join))
def test_sql_like_text_from_hypothesis_never_raises(text):
    result = analyze(statement(text), CATALOG)
    assert isinstance(result, Analysis | Skipped)
    if isinstance(result, Skipped):
        assert result.reason


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text):
    assert isinstance(analyze(statement(text), CATALOG), Analysis | Skipped)


@st.composite
def _selects(draw):
    """Valid SELECTs over the catalog's tables, with aliases, joins, predicates of every kind and ORDER BY."""
    tables = {key: sorted(info.columns) for key, info in CATALOG.tables.items()}
    first = draw(st.sampled_from(sorted(tables)))
    second = draw(st.sampled_from(sorted(tables)))
    a, b = draw(st.sampled_from([("a", "b"), ("t1", "t2"), ("x", "y")]))
    join = draw(st.booleans())
    source = f"{first[0]}.{first[1]} {a}"
    if join:
        source += f" JOIN {second[0]}.{second[1]} {b} ON {b}.{draw(st.sampled_from(tables[second]))} = "
        source += f"{a}.{draw(st.sampled_from(tables[first]))}"
    aliases = [(a, first)] + ([(b, second)] if join else [])
    predicates = []
    for _ in range(draw(st.integers(0, 4))):
        alias, table = draw(st.sampled_from(aliases))
        column = f"{alias}.{draw(st.sampled_from(tables[table]))}"
        value = draw(st.sampled_from(["$1", "$2", "'open'", "42", "now()", "$3::int"]))
        predicates.append(
            draw(
                st.sampled_from(
                    [
                        f"{column} = {value}",
                        f"{column} > {value}",
                        f"{column} BETWEEN {value} AND $9",
                        f"{column} IN ({value}, $8)",
                        f"{column} = ANY($7)",
                        f"{column} IS NULL",
                        f"{column} LIKE 'ab%'",
                        f"({column} = {value} OR {column} IS NULL)",
                    ]
                )
            )
        )
    alias, table = draw(st.sampled_from(aliases))
    order = f" ORDER BY {alias}.{draw(st.sampled_from(tables[table]))} DESC LIMIT $5" if draw(st.booleans()) else ""
    where = f" WHERE {' AND '.join(predicates)}" if predicates else ""
    return f"SELECT * FROM {source}{where}{order}"


@settings(max_examples=200, deadline=None)
@given(_selects())
def test_every_extracted_column_belongs_to_the_table_it_is_reported_for(query):
    result = analyze(statement(query), CATALOG)
    assert isinstance(result, Analysis), (query, result)
    for key, use in result.tables.items():
        reported = {*use.equality, *use.range, *use.join, *use.sort, *use.group, *use.like, *use.referenced}
        assert reported <= set(CATALOG.tables[key].columns), (query, key, reported)
    for number, param in result.params.items():
        if param.column is not None:
            assert param.column in CATALOG.tables[param.table].columns, (query, number, param)
    _same_columns_as_sqlglot(query)
