"""Read a statement with sqlglot, bounded in size, and hand its tree to `extract`, which says per table which
columns it searches by equality, range, join and sort.

Nothing here raises on bad input: a statement the advisor can't use comes back as `Skipped` with a reason.
"""

from __future__ import annotations

import itertools
import logging
import re

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres

from pgops.advisor.extract import MissingRelation, extract
from pgops.advisor.model import (
    SKIP_MISSING_RELATION,
    SKIP_MULTIPLE,
    SKIP_PRIVILEGE,
    SKIP_SYNTAX,
    SKIP_TOO_LARGE,
    SKIP_UTILITY,
    Analysis,
    Catalog,
    Skipped,
    Statement,
)
from pgops.advisor.normalize import plannable
from pgops.errors import first_line

# A statement's parse work is bounded: sqlglot's time and memory grow with the text (its tree takes many times the
# text's size), and extraction with the syntax nodes. Statements this long are generated (IN lists, multi-row
# VALUES) and rare; PostgreSQL keeps at most track_activity_query_size (1 kB by default, 1 MB at most) of one.
MAX_STATEMENT_CHARS = 100_000
MAX_STATEMENT_NODES = 50_000  # text dense in nodes (`a=1 OR a=2 ...`) reaches this below MAX_STATEMENT_CHARS
_SHOWN_CHARS = 1_000  # of a statement too large to analyze, kept for --explain and the JSON output

_DIALECT = Postgres()
# sqlglot logs how it reads odd syntax ("Applying array index offset", "unsupported syntax"): noise on a pgops
# user's stderr, where a statement the advisor can't use is already reported as Skipped with its reason.
logging.getLogger("sqlglot").setLevel(logging.CRITICAL + 1)
# Leading comments are matched possessively (`*+`): with backtracking, `.*?` could also end a comment at a later
# `*/`, and a run of comments before a non-keyword took time exponential in their number.
_FIRST_WORD = re.compile(r"^\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*)*+\(*\s*([A-Za-z]+)", re.DOTALL)
_QUERY_WORDS = {"select", "with", "insert", "update", "delete", "values", "table"}


def parse(text: str) -> exp.Expression | Skipped:
    """The statement's syntax tree, or why it can't be used."""
    if len(text) > MAX_STATEMENT_CHARS:
        detail = f"{len(text):,} characters, over the limit of {MAX_STATEMENT_CHARS:,}"
        return Skipped(_shortened(text), SKIP_TOO_LARGE, detail)
    stripped = text.strip().rstrip(";").strip()
    if stripped == "<insufficient privilege>":
        return Skipped(text, SKIP_PRIVILEGE)
    match = _FIRST_WORD.match(stripped)
    if not match:
        return Skipped(text, SKIP_SYNTAX, "no statement keyword")
    if match[1].lower() not in _QUERY_WORDS:
        return Skipped(text, SKIP_UTILITY, match[1].upper())
    try:
        trees = [tree for tree in _DIALECT.parse(stripped) if tree is not None]
    except Exception as exc:  # sqlglot raises ParseError, TokenError and, on odd input, others
        return Skipped(text, SKIP_SYNTAX, _first_line(exc))
    if len(trees) != 1:
        return Skipped(text, SKIP_MULTIPLE if trees else SKIP_SYNTAX)
    tree = trees[0]
    if not isinstance(tree, exp.Query | exp.Insert | exp.Update | exp.Delete):
        return Skipped(text, SKIP_UTILITY, type(tree).__name__)
    if sum(1 for _ in itertools.islice(tree.walk(), MAX_STATEMENT_NODES + 1)) > MAX_STATEMENT_NODES:
        return Skipped(_shortened(text), SKIP_TOO_LARGE, f"over the limit of {MAX_STATEMENT_NODES:,} syntax nodes")
    return tree


def _shortened(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def analyze(statement: Statement, catalog: Catalog) -> Analysis | Skipped:
    """Parse and extract in one step; no exception escapes."""
    text = plannable(statement.query) if len(statement.query) <= MAX_STATEMENT_CHARS else statement.query
    tree = parse(text)
    if isinstance(tree, Skipped):
        return _with_weight(tree, statement)
    try:
        result = extract(statement, tree, catalog)
    except MissingRelation as missing:
        return Skipped(statement.query, SKIP_MISSING_RELATION, str(missing), statement.calls, statement.total_time_ms)
    except RecursionError:
        return Skipped(statement.query, SKIP_SYNTAX, "nested too deeply", statement.calls, statement.total_time_ms)
    except Exception as exc:  # sqlglot's scope builder can trip on constructs it parses but does not model
        return Skipped(statement.query, SKIP_SYNTAX, _first_line(exc), statement.calls, statement.total_time_ms)
    if isinstance(result, Skipped):
        return _with_weight(result, statement)
    result.text = text
    return result


def _with_weight(skipped: Skipped, statement: Statement) -> Skipped:
    return Skipped(skipped.query, skipped.reason, skipped.detail, statement.calls, statement.total_time_ms)


def _first_line(exc: BaseException) -> str:
    return first_line(exc)[:200]


def count_parameters(text: str) -> int:
    """The highest `$n` in a statement, for PREPARE; tolerant of text sqlglot can't read."""
    return max((int(n) for n in re.findall(r"\$(\d+)", text)), default=0)
