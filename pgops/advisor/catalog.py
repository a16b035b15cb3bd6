"""Catalog reads: tables with their columns' planner statistics, and existing indexes as pg_index has them."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

from pgops.advisor.model import ADVISED, Catalog, ColumnInfo, ExistingIndex, TableInfo
from pgops.resources import MARK, read_sql


def read_catalog(conn: psycopg.Connection) -> Catalog:
    """Everything the advisor needs to know about the current database, in three queries."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            MARK + "SELECT current_database() AS database, current_setting('server_version_num')::int AS version, "
            "current_schemas(false) AS search_path, "
            "(SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()) AS stats_reset, "
            "pg_database_size(current_database()) AS database_bytes"
        )
        head = cur.fetchone()
        assert head is not None
        tables = [_table(row) for row in cur.execute(read_sql("advisor/tables.sql")).fetchall()]
        indexes = [_index(row) for row in cur.execute(read_sql("advisor/indexes.sql")).fetchall()]
    return Catalog(
        database=head["database"],
        server_version=head["version"],
        search_path=list(head["search_path"]),
        tables={table.key: table for table in tables},
        indexes=indexes,
        stats_reset=head["stats_reset"],
        database_bytes=head["database_bytes"],
    )


def _table(row: dict) -> TableInfo:
    columns = {}
    for column in row["columns"]:
        columns[column["name"]] = ColumnInfo(
            name=column["name"],
            type=column["type"],
            not_null=column["not_null"],
            btree=column["btree"],
            pattern_opclass=None if column["c_collation"] else _pattern_opclass(column["type"]),
            null_frac=column["null_frac"],
            n_distinct=column["n_distinct"],
            most_common_vals=tuple(column["most_common_vals"] or ()),
            most_common_freqs=tuple(column["most_common_freqs"] or ()),
            histogram_bounds=tuple(column["histogram_bounds"] or ()),
            avg_width=column["avg_width"],
            correlation=column["correlation"],
        )
    return TableInfo(
        schema=row["schema"],
        name=row["name"],
        reltuples=row["reltuples"],
        relpages=row["relpages"],
        size_bytes=row["size_bytes"],
        columns=columns,
        n_tup_ins=row["n_tup_ins"],
        n_tup_upd=row["n_tup_upd"],
        n_tup_hot_upd=row["n_tup_hot_upd"],
        n_tup_del=row["n_tup_del"],
        index_count=row["index_count"],
    )


def _pattern_opclass(type_name: str) -> str | None:
    """Outside the C collation a B-tree serves `LIKE 'x%'` only with the type's pattern operator class."""
    if type_name == "text":
        return "text_pattern_ops"
    if type_name.startswith("character varying"):
        return "varchar_pattern_ops"
    if type_name.startswith("character"):
        return "bpchar_pattern_ops"
    return None


def _index(row: dict) -> ExistingIndex:
    columns = list(row["columns"])
    keys = row["key_count"]
    return ExistingIndex(
        schema=row["schema"],
        name=row["name"],
        table=(row["table_schema"], row["table_name"]),
        key_columns=tuple(columns[:keys]),
        key_opclasses=tuple(row["opclasses"][:keys]),
        include_columns=tuple(c for c in columns[keys:] if c is not None),
        predicate=row["predicate"],
        method=row["method"],
        unique=row["is_unique"],
        primary=row["is_primary"],
        constraint=row["constraint_name"],
        valid=row["is_valid"],
        scans=row["scans"],
        size_bytes=row["size_bytes"],
        definition=row["definition"],
        advised=row["comment"] == ADVISED,
    )
