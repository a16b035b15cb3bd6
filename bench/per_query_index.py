"""A per-query index reference, the way per-query tools such as Dexter choose: for each statement alone, the
one index hypopg finds best for it, with no regard for the rest of the workload or for size.

For one statement, on a database without its other hypothetical indexes (as Dexter does it):
  1. candidate columns: every column of a table the statement reads (not of a CTE) that the statement names;
  2. pass 1: a hypothetical single-column index on every candidate column at once, then EXPLAIN; pass 2: add
     a two-column index on every ordered pair of candidate columns of one table, then EXPLAIN;
  3. each hypothetical index that either plan uses is planned again alone; the cheapest one wins;
  4. it is kept when it cuts the statement's estimated cost by at least `min_saving` (Dexter's default: 50%),
     and when no existing index of the table starts with the same columns.
It calls only hypopg and EXPLAIN, never pgops, so it measures pgops from outside.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field

import psycopg
import sqlglot
from psycopg import sql
from sqlglot import exp

MAX_HYPOTHETICAL = 500  # hypopg's own limit on one backend's hypothetical indexes is in the thousands


@dataclass(frozen=True)
class Index:
    table: str
    columns: tuple[str, ...]

    def create(self, conn: psycopg.Connection, name: str = "") -> str:
        """CREATE INDEX [name] ON table (columns), with the names quoted for `conn`."""
        return (
            sql.SQL("CREATE INDEX {}ON {} ({})")
            .format(
                sql.SQL("{} ").format(sql.Identifier(name)) if name else sql.SQL(""),
                sql.Identifier(self.table),
                sql.SQL(", ").join(map(sql.Identifier, self.columns)),
            )
            .as_string(conn)
        )

    def __str__(self) -> str:
        return f"{self.table} ({', '.join(self.columns)})"


@dataclass
class Choice:
    label: str
    cost: float  # estimated, without the index
    best: Index | None = None
    best_cost: float | None = None
    kept: bool = False
    note: str = ""
    tried: list[tuple[Index, float]] = field(default_factory=list)


def catalog(conn: psycopg.Connection) -> tuple[dict[str, set[str]], set[tuple[str, tuple[str, ...]]]]:
    """Columns of each table in `public`, and the column lists of its existing btree indexes."""
    columns: dict[str, set[str]] = {}
    for table, column in conn.execute(
        "SELECT c.relname, a.attname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
    ):
        columns.setdefault(table, set()).add(column)
    existing = set()
    for table, keys in conn.execute(
        "SELECT t.relname, array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
        "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "CROSS JOIN LATERAL unnest(i.indkey[:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
        "WHERE n.nspname = 'public' GROUP BY i.indexrelid, t.relname"
    ):
        existing.add((table, tuple(keys)))
    return columns, existing


def candidate_columns(text: str, columns: dict[str, set[str]]) -> dict[str, list[str]]:
    tree = sqlglot.parse_one(text, read="postgres")
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    tables = {t.name for t in tree.find_all(exp.Table) if t.name in columns and t.name not in ctes}
    named = {c.name for c in tree.find_all(exp.Column)}
    return {t: sorted(named & columns[t]) for t in sorted(tables) if named & columns[t]}


def _plan(conn: psycopg.Connection, text: str) -> tuple[float, set[str]]:
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(text)).fetchone()
    plan = (json.loads(row[0]) if isinstance(row[0], str) else row[0])[0]["Plan"]
    used, stack = set(), [plan]
    while stack:
        node = stack.pop()
        if "Index Name" in node:
            used.add(node["Index Name"])
        stack += node.get("Plans", [])
    return float(plan["Total Cost"]), used


def _hypothetical(conn: psycopg.Connection, index: Index) -> str | None:
    statement = index.create(conn)
    try:
        with conn.transaction():
            oid, name = conn.execute("SELECT * FROM hypopg_create_index(%s)", (statement,)).fetchone()
    except psycopg.Error:
        return None  # a type without a btree operator class
    return name or f"<{oid}>"


def choose(
    conn: psycopg.Connection,
    label: str,
    text: str,
    min_saving: float = 0.5,
    known: tuple[dict[str, set[str]], set[tuple[str, tuple[str, ...]]]] | None = None,
) -> Choice:
    """The one index that hypopg finds best for this statement alone (see the module's docstring); `known` is
    `catalog(conn)`, read here when not given."""
    columns, existing = known or catalog(conn)
    conn.execute("SELECT hypopg_reset()")
    cost, _ = _plan(conn, text)
    choice = Choice(label, cost)
    wanted = candidate_columns(text, columns)
    if not wanted:
        choice.note = "no candidate column"
        return choice
    singles = [Index(t, (c,)) for t, cols in wanted.items() for c in cols]
    pairs = [Index(t, pair) for t, cols in wanted.items() for pair in itertools.permutations(cols, 2)]
    used: set[Index] = set()
    created: dict[str, Index] = {}
    for batch in (singles, pairs):
        for index in batch:
            if len(created) >= MAX_HYPOTHETICAL:
                break
            name = _hypothetical(conn, index)
            if name:
                created[name] = index
        _, names = _plan(conn, text)
        used |= {created[n] for n in names if n in created}
    conn.execute("SELECT hypopg_reset()")
    for index in sorted(used, key=str):
        if _hypothetical(conn, index) is None:
            continue
        alone, _ = _plan(conn, text)
        conn.execute("SELECT hypopg_reset()")
        choice.tried.append((index, alone))
    if not choice.tried:
        choice.note = "no hypothetical index used"
        return choice
    choice.best, choice.best_cost = min(choice.tried, key=lambda item: (item[1], str(item[0])))
    best = choice.best
    if any(keys[: len(best.columns)] == best.columns for table, keys in existing if table == best.table):
        choice.note = "an existing index starts with these columns"
    elif choice.best_cost > cost * (1 - min_saving):
        choice.note = f"saves {1 - choice.best_cost / cost:.0%} of the estimated cost, under {min_saving:.0%}"
    else:
        choice.kept = True
    return choice


def reference(conn: psycopg.Connection, statements: list[tuple[str, str]], min_saving: float = 0.5) -> list[Choice]:
    """`choose` for every (label, text), each statement alone."""
    known = catalog(conn)
    return [choose(conn, label, text, min_saving, known) for label, text in statements]


def distinct_indexes(choices: list[Choice]) -> list[Index]:
    """The kept indexes once each; a one-column index that leads a kept two-column one is dropped, as Dexter does."""
    kept = {c.best for c in choices if c.kept and c.best}
    led = {(i.table, i.columns[:1]) for i in kept if len(i.columns) > 1}
    return sorted((i for i in kept if (i.table, i.columns) not in led), key=str)


def script(conn: psycopg.Connection, choices: list[Choice]) -> str:
    """The reference's indexes as a psql script, each after a comment naming the statements it is best for."""
    lines = []
    for number, index in enumerate(distinct_indexes(choices), 1):
        served = ", ".join(c.label for c in choices if c.kept and c.best == index)
        lines.append(f"-- {index}: best alone for {served}" if served else f"-- {index}")
        lines.append(index.create(conn, f"ref{number}_{index.table}_{'_'.join(index.columns)}"[:63]) + ";")
    return "\n".join(lines) + "\n"


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
