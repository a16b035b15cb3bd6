"""View names read as PostgreSQL reads `[schema.]name`, with no database: the table, and any text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgops.errors import PgopsError
from pgops.refresh.names import ViewName, parse_view_name


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("fund_stats", ViewName(None, "fund_stats")),
        ("Public.Fund_Stats", ViewName("public", "fund_stats")),
        (' "My Schema" . "My.View" ', ViewName("My Schema", "My.View")),
        ('"a""b".c$1', ViewName('a"b', "c$1")),
        ("café.Größe", ViewName("café", "größe")),  # only ASCII letters fold, as in PostgreSQL
    ],
)
def test_names_parse_as_postgresql_reads_them(text, parsed):
    assert parse_view_name(text) == parsed


@pytest.mark.parametrize(
    "text",
    ["a.b.c.d", "a.b.c", "x'; DROP TABLE victim; --", "", "a.", ".a", '""', '"abc', "1abc", "a b", "a;b", "a\0b"],
)
def test_anything_else_is_one_line(text):
    with pytest.raises(PgopsError, match="is not a view name") as err:
        parse_view_name(text)
    assert "\n" not in str(err.value)


_PART = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), min_size=1, max_size=20)


@given(schema=st.none() | _PART, name=_PART)
def test_any_name_round_trips_through_its_quoted_form(schema, name):
    view = ViewName(schema, name)
    assert parse_view_name(view.quoted) == view
    assert "\n" not in str(view)


@given(text=st.text(max_size=60))
def test_any_text_parses_or_is_one_line(text):
    try:
        view = parse_view_name(text)
    except PgopsError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 300
    else:
        assert parse_view_name(view.quoted) == view and 1 <= len(view.parts) <= 2
