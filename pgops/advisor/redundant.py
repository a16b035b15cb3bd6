"""Existing indexes worth a second look: duplicates, ones another index's leading columns make redundant,
ones never scanned since the statistics were reset, and invalid leftovers of failed concurrent builds. An
index backing a constraint (primary key, unique, exclusion, a foreign key's referenced key) is never proposed
for dropping. Pure: reads only the catalog snapshot."""

from __future__ import annotations

from pgops.advisor.model import Catalog, DropSuggestion, ExistingIndex, Review
from pgops.advisor.script import drop_statement


def _comparable(index: ExistingIndex) -> bool:
    return index.valid and index.method == "btree" and None not in index.key_columns


def _protected(index: ExistingIndex) -> bool:
    return index.primary or index.unique or index.constraint is not None


def review(catalog: Catalog, in_use: set[str] | frozenset[str] = frozenset()) -> list[DropSuggestion]:
    """`in_use`: existing indexes the workload's plans use: not unused, however few scans the statistics have
    counted (an index built a minute ago has none yet)."""
    suggestions: dict[str, DropSuggestion] = {}

    def suggest(index: ExistingIndex, kind: Review, reason: str) -> None:
        key = f"{index.schema}.{index.name}"
        if key not in suggestions:
            text = drop_statement(index.schema, index.name).as_string(None)
            table = f"{index.table[0]}.{index.table[1]}"
            suggestions[key] = DropSuggestion(key, table, kind, reason, index.size_bytes, text)

    for index in catalog.indexes:
        if not index.valid:
            suggest(index, Review.INVALID, "INVALID (a failed concurrent build?): it slows writes and serves no query")
    by_table: dict[tuple[str, str], list[ExistingIndex]] = {}
    for index in catalog.indexes:
        if _comparable(index):
            by_table.setdefault(index.table, []).append(index)
    for indexes in by_table.values():
        for index in indexes:
            if _protected(index):
                continue
            for other in indexes:
                if other is index or other.predicate != index.predicate:
                    continue
                same = other.key_columns == index.key_columns and other.include_columns == index.include_columns
                if same and (_protected(other) or other.name < index.name):
                    suggest(index, Review.DUPLICATE, f"same columns as {other.schema}.{other.name}")
                    break
                covered = set(index.include_columns) <= {*other.key_columns, *other.include_columns}
                if (
                    len(other.key_columns) > len(index.key_columns)
                    and other.key_columns[: len(index.key_columns)] == index.key_columns
                    and covered
                ):
                    suggest(index, Review.REDUNDANT, f"its columns lead {other.schema}.{other.name}")
                    break
    since = f"since {catalog.stats_reset:%Y-%m-%d}" if catalog.stats_reset else "since statistics began"
    for index in catalog.indexes:
        if index.valid and index.scans == 0 and not _protected(index) and index.name not in in_use:
            suggest(index, Review.UNUSED, f"no scans {since}")
    return sorted(suggestions.values(), key=lambda s: (s.kind, s.index))
