"""How large a B-tree index will be once built, from the table's statistics. Pure.

A leaf page (8 kB, filled to 90% by CREATE INDEX) holds one tuple per row: an 8-byte header and the key and
INCLUDE values, aligned to 8 bytes, plus a 4-byte line pointer. Since PostgreSQL 13 a B-tree also deduplicates:
the rows of one key value share one tuple that lists their row pointers (6 bytes each), so an index on a column
of few values is far smaller than one tuple per row. Deduplication is off for INCLUDE indexes and for types
whose equal values may differ (numeric, floats, jsonb, arrays, ranges, composite types).
"""

from __future__ import annotations

import math

from pgops.advisor.model import Candidate, Catalog, TableInfo

PAGE = 8192
USABLE = PAGE - 24 - 16  # page header, B-tree special space
LEAF_FILL = 0.9
TUPLE_HEADER = 8
LINE_POINTER = 4
TID = 6
MAX_POSTING_TIDS = 400  # a posting list tuple is limited to about a third of a page
INTERNAL_FANOUT = 200
_NO_DEDUP = ("numeric", "double precision", "real", "jsonb", "json", "[]", "range", "multirange", "record")
_FIXED_WIDTH = {
    "smallint": 2,
    "integer": 4,
    "bigint": 8,
    "date": 4,
    "boolean": 1,
    "real": 4,
    "double precision": 8,
    "uuid": 16,
    "oid": 4,
}


def _align8(size: float) -> float:
    return math.ceil(size / 8) * 8


def column_width(table: TableInfo, column: str) -> float:
    info = table.columns.get(column)
    if info is None:
        return 8.0
    kind = info.type.split("(")[0]
    if kind in _FIXED_WIDTH:
        return float(_FIXED_WIDTH[kind])
    if kind.startswith(("timestamp", "time", "interval")):
        return 8.0 if not kind.startswith("interval") else 16.0
    return float(info.avg_width or 8)


def _dedup(table: TableInfo, candidate: Candidate) -> bool:
    if candidate.include:
        return False
    for column in candidate.columns:
        info = table.columns.get(column)
        if info is None or any(marker in info.type for marker in _NO_DEDUP):
            return False
    return True


def distinct_keys(table: TableInfo, columns: tuple[str, ...], rows: float) -> float:
    """Distinct key values: the product of the columns' distinct counts, at most the rows (independence)."""
    keys = 1.0
    for column in columns:
        keys *= max(min(table.distinct(column), rows), 1.0)
    return max(min(keys, rows), 1.0)


def estimate_size(catalog: Catalog, candidate: Candidate, rows: float | None = None) -> int:
    """Bytes of the built index; `rows` is the number of rows it covers (a partial index covers fewer)."""
    table = catalog.tables[candidate.table]
    rows = max(table.reltuples if rows is None else rows, 1.0)
    data = sum(column_width(table, c) for c in (*candidate.columns, *candidate.include))
    tuple_bytes = _align8(TUPLE_HEADER + data) + LINE_POINTER
    if _dedup(table, candidate):
        keys = distinct_keys(table, candidate.columns, rows)
        per_key = rows / keys
        if per_key > 1.5:  # worth a posting list: one tuple per key (per MAX_POSTING_TIDS rows)
            tuples = keys * math.ceil(per_key / MAX_POSTING_TIDS)
            leaf_bytes = tuples * tuple_bytes + rows * TID
        else:
            leaf_bytes = rows * tuple_bytes
    else:
        leaf_bytes = rows * tuple_bytes
    leaf_pages = math.ceil(leaf_bytes / (USABLE * LEAF_FILL))
    internal_pages = math.ceil(leaf_pages / INTERNAL_FANOUT)
    return int((1 + leaf_pages + internal_pages) * PAGE)
