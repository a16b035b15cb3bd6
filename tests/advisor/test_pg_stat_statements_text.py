"""Statements as pg_stat_statements records them on the server under test (15 and 18 in CI): each one is read
by the advisor and planned, none skipped for the way PostgreSQL wrote its placeholders."""

from __future__ import annotations

import pytest

from pgops.advisor.catalog import read_catalog
from pgops.advisor.hypo import Planner
from pgops.advisor.model import Analysis
from pgops.advisor.parse import analyze
from pgops.advisor.workload import StatementFilter, read_pg_stat_statements
from tests.advisor.helpers import statement

# Each with literals as an application (or a person in psql) sends them; pg_stat_statements turns every
# constant into $n, including typed literals, extract's field and list elements (collapsed on 18).
STATEMENTS = [
    "SELECT * FROM t WHERE d >= date '2024-01-01' AND d < date '2024-02-01' + interval '1 day'",
    "SELECT extract(year from d), count(*) FROM t WHERE id > 10 GROUP BY 1",
    "SELECT * FROM t WHERE id IN (1,2,3)",
    "SELECT * FROM t WHERE id IN (1,2,3,4,5,6,7,8)",
    "SELECT * FROM t WHERE id = ANY(ARRAY[1,2,3])",
    "SELECT * FROM t WHERE ts > timestamp '2024-01-01 00:00' AND ts < timestamptz '2024-02-01 00:00+00'",
    "SELECT * FROM t WHERE ts > timestamp with time zone '2024-01-01 00:00+00'",
    "SELECT * FROM t WHERE id = 5::bigint AND note = 'a'::text",
    "SELECT * FROM t WHERE note LIKE 'abc%' ORDER BY id LIMIT 10 OFFSET 5",
    "SELECT * FROM t WHERE ts > now() - interval '1 hour'",
    "SELECT substring(note from 1 for 3) FROM t WHERE id BETWEEN 1 AND 10",
    "UPDATE t SET note = 'x' WHERE id = 1",
    "DELETE FROM t WHERE d < date '2000-01-01'",
    # constant arithmetic (`$2 + $3`: unknown + unknown) and parameters no operator types (TPC-DS's q2, q5)
    "SELECT count(*) FROM t WHERE id BETWEEN 100 AND 100 + 11 AND coalesce(note, 'x') <> 'y'",
    "SELECT 'store' AS channel, concat('store', note) AS label, coalesce(note, 'none') FROM t WHERE id + 1 > 5 "
    "UNION ALL SELECT 'web' AS channel, concat('web', note), note FROM t WHERE id > 10 * 3",
]


@pytest.fixture
def recorded(conn) -> list[str]:
    conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, d date, ts timestamptz, note text)")
    conn.execute("INSERT INTO t SELECT n, date '2024-01-01' + n % 60, now(), 'n' || n FROM generate_series(1, 500) n")
    conn.execute("ANALYZE t")
    conn.execute("SELECT pg_stat_statements_reset()")
    for text in STATEMENTS:
        conn.execute(text)  # psycopg sends it as written: no parameters
    return [
        s.query for s in read_pg_stat_statements(conn, StatementFilter(min_calls=1, top=100)) if " t " in f"{s.query} "
    ]


def test_every_recorded_statement_is_analyzed_and_planned(conn, recorded):
    catalog = read_catalog(conn)
    assert len(recorded) >= len(STATEMENTS) - 1  # the two IN lists are one entry where 18 collapses them
    assert any("$1" in text for text in recorded)
    planner = Planner(conn, catalog)
    for text in recorded:
        analysis = analyze(statement(text), catalog)
        assert isinstance(analysis, Analysis), (text, analysis)
        cost = planner.costs(analysis).cost
        assert cost > 0, text


def test_the_corpus_shows_the_placeholders_this_server_writes(conn, recorded):
    version = conn.info.server_version
    assert any("date $" in text or "$1::date" in text for text in recorded), recorded
    assert any("extract($" in text for text in recorded), recorded
    if version >= 180000:
        assert any("/*, ... */" in text for text in recorded), recorded
    else:
        assert any("IN ($1,$2,$3)" in text for text in recorded), recorded
