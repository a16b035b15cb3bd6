"""Without hypopg: estimate, from pg_stats selectivity, what an index would cut from a statement's cost, in
the planner's cost units so the selection works the same way. Results are labelled unvalidated. Pure."""

from __future__ import annotations

from pgops.advisor.model import Analysis, Candidate, Catalog, TableInfo

SEQ_PAGE, RANDOM_PAGE, CPU_TUPLE, CPU_INDEX_TUPLE = 1.0, 4.0, 0.01, 0.005
RANGE_SELECTIVITY = 0.1  # `created_at > $1` usually asks for a recent tail
SMALL_TABLE_PAGES = 10  # the planner scans a table this small sequentially anyway


def scan_cost(table: TableInfo) -> float:
    return max(table.relpages, 1) * SEQ_PAGE + max(table.reltuples, 1) * CPU_TUPLE


def statement_cost(analysis: Analysis, catalog: Catalog) -> float:
    """The statement's cost as sequential scans of its tables: the baseline rules improve on."""
    return sum(scan_cost(catalog.tables[key]) for key in analysis.tables if key in catalog.tables)


def equality_selectivity(table: TableInfo, column: str) -> float:
    return 1.0 / table.distinct(column)


def constant_fraction(table: TableInfo, column: str, value: object) -> float:
    info = table.columns.get(column)
    if info and value is not None and str(value) in info.most_common_vals:
        return info.most_common_freqs[info.most_common_vals.index(str(value))]
    if info and value is None:
        return info.null_frac if info.null_frac is not None else 0.1
    return equality_selectivity(table, column)


def _serves_like(table: TableInfo, candidate: Candidate, column: str) -> bool:
    """A B-tree serves `LIKE 'x%'` in the C collation, or with the pattern operator class."""
    info = table.columns.get(column)
    needed = info.pattern_opclass if info else None
    return candidate.opclass(candidate.columns.index(column)) == needed


def estimate(analysis: Analysis, candidate: Candidate, catalog: Catalog) -> float:
    """The statement's cost with the candidate, or its baseline when the index would not help."""
    before = statement_cost(analysis, catalog)
    table = catalog.tables.get(candidate.table)
    use = analysis.tables.get(candidate.table)
    if table is None or use is None or table.relpages < SMALL_TABLE_PAGES:
        return before
    constants = {(c.column, c.op, c.value) for c in use.constants}
    if any((c.column, c.op, c.value) not in constants for c in candidate.predicate):
        return before  # the partial index does not cover the rows this statement asks for
    rows = max(table.reltuples, 1.0)
    selectivity = 1.0
    for constant in candidate.predicate:
        selectivity *= constant_fraction(table, constant.column, constant.value)
    matched = 0
    for column in candidate.columns:
        if column in use.equality or column in use.join:
            selectivity *= equality_selectivity(table, column)
            matched += 1
            continue
        if column in use.range or (column in use.like and _serves_like(table, candidate, column)):
            selectivity *= RANGE_SELECTIVITY
            matched += 1
        elif analysis.has_limit and use.sort and column == use.sort[0]:
            selectivity = min(selectivity, 20.0 / rows)  # read in order, stop at the LIMIT
            matched += 1
        break
    if matched == 0 and not candidate.predicate:
        return before
    fetched = rows * selectivity
    covering = not use.star and use.referenced <= {*candidate.columns, *candidate.include}
    heap = 0.0 if covering else min(fetched, table.relpages) * RANDOM_PAGE
    after_table = 2 * RANDOM_PAGE + fetched * (CPU_INDEX_TUPLE + CPU_TUPLE) + heap
    return before - max(scan_cost(table) - after_table, 0.0)


def existing_cost(analysis: Analysis, catalog: Catalog) -> tuple[float, frozenset[str]]:
    """The statement's cost with the indexes it already has (the best any one valid plain B-tree gives it, so a
    run after its own advice was applied finds the statement served), and the name of that index."""
    best, used = statement_cost(analysis, catalog), frozenset[str]()
    for key in analysis.tables:
        for index in catalog.indexes_on(key):
            if index.method != "btree" or not index.valid or index.predicate or None in index.key_columns:
                continue
            columns = tuple(c for c in index.key_columns if c is not None)
            candidate = Candidate(key, columns, index.include_columns, (), index.key_opclasses)
            cost = estimate(analysis, candidate, catalog)
            if cost < best:
                best, used = cost, frozenset({index.name})
    return best, used
