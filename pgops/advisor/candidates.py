"""Candidate B-tree indexes from what statements ask of each table: equality columns first (those shared by
more statements, then the less distinct, so one index serves several statements by its prefix), then one range
column, then the sort columns; plus join columns, INCLUDE variants for index-only scans, and partial variants
for constant predicates. Pure: no database access."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import combinations

from pgops.advisor.model import (
    Analysis,
    Candidate,
    Catalog,
    Constant,
    ExistingIndex,
    Rejection,
    TableInfo,
    TableKey,
    TableUse,
)

MAX_KEY_COLUMNS = 4
MAX_INCLUDE_COLUMNS = 3
# A constant predicate moves into a partial index only on a column with few values (status, kind, flags).
PARTIAL_MAX_DISTINCT = 50


def generate(analyses: list[Analysis], catalog: Catalog) -> tuple[dict[Candidate, set[int]], list[Rejection]]:
    """Candidates, each with the statements (indexes into `analyses`) it is meant for; and what was dropped."""
    shared = _shared_counts(analyses)
    steady = _steady_constants(analyses)
    found: dict[Candidate, set[int]] = defaultdict(set)
    for number, analysis in enumerate(analyses):
        for key, use in analysis.tables.items():
            table = catalog.tables.get(key)
            if table is None:
                continue
            usable = {name for name, column in table.columns.items() if column.btree}
            if _unique_lookup(use, catalog.indexes_on(key)):
                continue
            constants = [c for c in use.constants if (key, c.column) in steady]
            for candidate in _for_table(use, table, usable, shared[key], constants):
                found[candidate].add(number)
    # Prefixes stay candidates of their own: the selection grows an index from its first column, and a shorter
    # index may serve as well for less space.
    rejected: list[Rejection] = []
    kept: dict[Candidate, set[int]] = {}
    for candidate, queries in found.items():
        serving = served_by(candidate, catalog.indexes_on(candidate.table))
        if serving:
            rejected.append(
                Rejection(candidate.describe(), f"existing index {serving.schema}.{serving.name} serves it")
            )
        else:
            kept[candidate] = queries
    return kept, rejected


def _shared_counts(analyses: list[Analysis]) -> dict[TableKey, Counter[str]]:
    counts: dict[TableKey, Counter[str]] = defaultdict(Counter)
    for analysis in analyses:
        for key, use in analysis.tables.items():
            counts[key].update({*use.equality, *use.join})
    return counts


def _steady_constants(analyses: list[Analysis]) -> set[tuple[TableKey, str]]:
    """Columns every statement compares with one and the same constant: the only safe partial predicates."""
    seen: dict[tuple[TableKey, str], set[Constant | None]] = defaultdict(set)
    for analysis in analyses:
        for key, use in analysis.tables.items():
            constant_columns = {c.column for c in use.constants}
            for constant in use.constants:
                seen[(key, constant.column)].add(constant)
            for column in {*use.equality, *use.range} - constant_columns:
                seen[(key, column)].add(None)  # compared with a parameter or an expression somewhere
    return {column for column, constants in seen.items() if len(constants) == 1 and None not in constants}


def _for_table(
    use: TableUse, table: TableInfo, usable: set[str], shared: Counter[str], constants: list[Constant]
) -> list[Candidate]:
    equality = sorted((c for c in use.equality if c in usable), key=lambda c: (-shared[c], table.distinct(c), c))
    ranges = [c for c in use.range if c in usable and c not in equality]
    sort = [c for c in use.sort if c in usable]
    group = [c for c in use.group if c in usable and c not in equality]
    shapes: list[list[str]] = []
    if equality and not ranges:
        shapes.append(equality)
    for column in ranges[:2]:  # which range column narrows more depends on the values: let the planner say
        shapes.append([*equality, column])
    if sort and (not ranges or ranges[0] == sort[0]):
        shapes.append(equality + [c for c in sort if c not in equality])
    if group and not sort:
        shapes.append(equality + group)
    joins = [c for c in use.join if c in usable and c not in equality]
    for join in joins:
        shapes.append([join])
        if equality:
            shapes.append([join, *equality])
    for first, second in combinations(joins, 2):  # a composite join key: lineitem (l_partkey, l_suppkey)
        shapes += [[first, second], [second, first]]
    shapes += [[column] for column in sorted(use.searched & usable)]  # every single column a step may grow from
    candidates: list[Candidate] = []
    for column in use.like:
        if column in usable and column not in equality and len(equality) < MAX_KEY_COLUMNS:
            opclasses = (*([None] * len(equality)), table.columns[column].pattern_opclass)
            candidates.append(Candidate(use.table, (*equality, column), (), (), opclasses))
    for shape in shapes:
        columns = tuple(dict.fromkeys(shape))[:MAX_KEY_COLUMNS]
        if not columns:
            continue
        candidates.append(Candidate(use.table, columns))
        include = _include(use, columns, usable)
        if include:
            candidates.append(Candidate(use.table, columns, include))
        partial = _partial(table, constants, columns)
        if partial:
            candidates.append(partial)
    return list(dict.fromkeys(candidates))


def _unique_lookup(use: TableUse, indexes: list[ExistingIndex]) -> bool:
    """Equality on all the columns of a unique index already finds at most one row: nothing to add."""
    return any(
        index.unique
        and index.valid
        and index.predicate is None
        and None not in index.key_columns
        and set(index.key_columns) <= set(use.equality)
        for index in indexes
    )


def _include(use: TableUse, columns: tuple[str, ...], usable: set[str]) -> tuple[str, ...]:
    """The other columns the statement reads from the table, when few enough for an index-only scan."""
    if use.star:
        return ()
    extra = sorted(c for c in use.referenced - set(columns) if c in usable)
    return tuple(extra) if 0 < len(extra) <= MAX_INCLUDE_COLUMNS else ()


def _partial(table: TableInfo, constants: list[Constant], columns: tuple[str, ...]) -> Candidate | None:
    """The same index restricted to the rows a constant predicate (`status = 'open'`) always selects."""
    for constant in constants:
        if constant.op == "=" and (constant.value is None or table.distinct(constant.column) > PARTIAL_MAX_DISTINCT):
            continue
        rest = tuple(c for c in columns if c != constant.column)
        if rest:
            return Candidate(table.key, rest, (), (constant,))
    return None


def served_by(candidate: Candidate, indexes: list[ExistingIndex]) -> ExistingIndex | None:
    """A valid, non-partial B-tree whose leading key columns are the candidate's already does its work; its
    INCLUDE columns do not make another index (a variant of an index is the same index, so a second run of
    the advisor on its own advice proposes nothing)."""
    width = len(candidate.columns)
    for index in indexes:
        if index.method != "btree" or not index.valid or index.predicate is not None:
            continue
        leading = index.key_columns[:width]
        if len(leading) < width or None in leading:
            continue
        if set(leading) != set(candidate.columns) or leading[-1] != candidate.columns[-1]:
            continue
        opclasses = dict(zip(index.key_columns, index.key_opclasses, strict=False))
        if any(opclasses.get(c) != candidate.opclass(n) for n, c in enumerate(candidate.columns)):
            continue  # a text_pattern_ops key does not serve ordering and ranges, nor the reverse
        return index  # with other INCLUDE columns, or partial, it is a variant of this index: the same one
    return None


class Extensions:
    """The one-column-larger variants of an index the selection may grow it into: another key column the
    statements on its table search, join, sort or group by, or an INCLUDE column they read."""

    def __init__(self, analyses: list[Analysis], catalog: Catalog) -> None:
        self.keys: dict[TableKey, set[str]] = defaultdict(set)
        self.reads: dict[TableKey, set[str]] = defaultdict(set)
        for analysis in analyses:
            for key, use in analysis.tables.items():
                table = catalog.tables.get(key)
                if table is None:
                    continue
                usable = {name for name, column in table.columns.items() if column.btree}
                self.keys[key] |= {*use.equality, *use.range, *use.join, *use.sort, *use.group} & usable
                if not use.star:
                    self.reads[key] |= use.referenced & usable

    def __call__(self, candidate: Candidate) -> Iterator[Candidate]:
        taken = {*candidate.columns, *candidate.include}
        if any(candidate.opclasses) or len(candidate.columns) >= MAX_KEY_COLUMNS:
            return
        if not candidate.include:
            for column in sorted(self.keys[candidate.table] - taken):
                yield Candidate(candidate.table, (*candidate.columns, column), (), candidate.predicate)
        if len(candidate.include) < MAX_INCLUDE_COLUMNS:
            for column in sorted(self.reads[candidate.table] - taken):
                include = tuple(sorted((*candidate.include, column)))
                yield Candidate(candidate.table, candidate.columns, include, candidate.predicate)
