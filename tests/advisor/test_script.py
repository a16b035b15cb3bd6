"""fix.sql under hostile names: a DBA runs it as superuser, so nothing a table owner or a query's author chose may
become a statement of its own. Pure: the script is parsed with PostgreSQL's own parser (pglast)."""

from __future__ import annotations

from datetime import UTC, datetime

import pglast
from hypothesis import given, settings

from pgops.advisor.model import (
    Advice,
    Candidate,
    Constant,
    DropSuggestion,
    QueryCost,
    Recommendation,
    Rejection,
    Skipped,
)
from pgops.advisor.script import comment_statement, drop_statement, index_definition, render_sql
from tests.helpers import hostile_text

# What the server allows in a name: anything but NUL, up to 63 bytes.
name = hostile_text.map(lambda text: text.replace("\x00", "").encode()[:63].decode(errors="ignore") or "x")


def advice_with(schema: str, table: str, column: str, include: str, value: str, text: str, index: str) -> Advice:
    candidate = Candidate(
        table=(schema, table), columns=(column,), include=(include,), predicate=(Constant(column, "=", value),)
    )
    recommendation = Recommendation(
        name="pgops_idx",
        candidate=candidate,
        create_sql=index_definition(candidate, "pgops_idx", concurrently=True, if_not_exists=True).as_string(None),
        drop_sql=drop_statement(schema, "pgops_idx").as_string(None),
        comment_sql=comment_statement(schema, index).as_string(None),
        size_bytes=8192,
        writes=10,
        write_overhead_ms=1.0,
        ends_hot_updates=False,
        saved_ms=100.0,
        validated=True,
        queries=[QueryCost(text, None, 10, 200.0, 100.0, 1.0)],
    )
    return Advice(
        database=text,
        generated_at=datetime(2026, 1, 1, tzinfo=UTC),
        sources=[f"file {text}"],
        thresholds={"min_calls": "1"},
        hypopg=True,
        hypopg_note=text,
        statements=1,
        analyzed=1,
        recommendations=[recommendation],
        rejected=[Rejection(candidate.describe(), text)],
        skipped=[Skipped(text, "syntax", text)],
        drops=[
            DropSuggestion(
                f"{schema}.{index}",
                f"{schema}.{table}",
                "unused",
                text,
                8192,
                drop_statement(schema, index).as_string(None),
            )
        ],
    )


@settings(max_examples=300)
@given(name, name, name, name, hostile_text, hostile_text, name)
def test_names_and_texts_from_the_database_never_become_statements(schema, table, column, include, value, text, index):
    value = value.replace("\x00", "")  # a text value from the server never holds NUL either
    script = render_sql(advice_with(schema, table, column, include, value, text, index), explain=True)
    statements = [raw.stmt for raw in pglast.parser.parse_sql(script)]
    assert [type(s).__name__ for s in statements] == [*["VariableSetStmt"] * 4, "IndexStmt", "CommentStmt"]
    create, comment = statements[4], statements[5]
    assert [n.sval for n in comment.object] == [schema, index] and comment.comment == "pgops advise-indexes"
    assert (create.relation.schemaname, create.relation.relname) == (schema, table)
    assert [p.name for p in create.indexParams] == [column]
    assert [p.name for p in create.indexIncludingParams] == [include]
    constant = create.whereClause.rexpr
    constant = getattr(constant, "arg", constant)  # 'x'::text or 'x'
    assert constant.val.sval == value
    assert create.concurrent and create.if_not_exists


def test_a_newline_in_a_column_name_stays_in_its_comment():
    evil = "email\nALTER ROLE lowpriv SUPERUSER; --"
    script = render_sql(advice_with("public", "t", evil, "x", "v", "SELECT 1", "idx\nDROP TABLE t; --"))
    statements = [line for line in script.splitlines() if line and not line.startswith("--")]
    # one line each
    assert [line.split(" ")[0] for line in statements] == ["SET", "SET", "SET", "SET", "CREATE", "COMMENT"]
    assert 'U&"email\\+00000aALTER ROLE lowpriv SUPERUSER; --"' in statements[4]
    # a statement to review is written as it would run: uncommented, it drops that very index
    assert '-- DROP INDEX CONCURRENTLY IF EXISTS "public".U&"idx\\+00000aDROP TABLE t; --";  -- unused: ' in script
    assert "-- 1. public.t (email\\nALTER ROLE lowpriv SUPERUSER; --)" in script  # readable, and escaped
