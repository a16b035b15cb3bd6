"""pgops.sqltext: whatever text lands in a comment stays in it, on one line, and reads back exactly."""

from __future__ import annotations

import re

import pglast
from hypothesis import given
from psycopg import sql

from pgops.sqltext import Script, comment, printable
from tests.helpers import hostile_text

_UNESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")
_SIMPLE = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def unescape(text: str) -> str:
    """The inverse of `printable`, to show nothing is lost."""
    return _UNESCAPE.sub(lambda m: _SIMPLE.get(m[1]) or chr(int(m[1][1:], 16)), text)


@given(hostile_text)
def test_printable_is_one_line_that_reads_back(text):
    line = printable(text)
    assert line.isprintable()
    assert "\n" not in line and "\r" not in line
    assert unescape(line) == text


@given(hostile_text)
def test_a_comment_never_becomes_a_statement(text):
    name = text.replace("\x00", "").encode()[:63].decode(errors="ignore") or "x"  # a name as the server has it
    script = Script()
    script.comment(text)
    script.statement(sql.SQL("SELECT {}").format(sql.Identifier(name)))
    script.comment(text)
    statements = pglast.parser.parse_sql(script.text())
    assert len(statements) == 1
    target = statements[0].stmt.targetList[0].val
    assert [field.sval for field in target.fields] == [name]


def test_plain_text_is_left_as_it_is():
    assert comment("public.orders (customer_id) INCLUDE (status)") == "-- public.orders (customer_id) INCLUDE (status)"
    assert printable("a\nb\\c\x1b[31m\u202e") == "a\\nb\\\\c\\x1b[31m\\u202e"
