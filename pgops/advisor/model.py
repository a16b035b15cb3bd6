"""The plain data the advisor's stages hand each other: workload entries, what a statement asks of each table,
the catalog, candidates, and the advice itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pgops.config import Target
from pgops.progress import QUIET, Progress

# Why a statement was not analyzed; the script's summary counts them by these reasons.
SKIP_UTILITY = "utility or DDL statement"
SKIP_PRIVILEGE = "<insufficient privilege>: grant pg_read_all_stats to see other users' statements"
SKIP_SYNTAX = "syntax sqlglot can't read, or truncated text"
SKIP_MISSING_RELATION = "relation no longer exists"
SKIP_NO_TABLE = "reads no user table"
SKIP_PLAN_FAILED = "the planner could not plan it"
SKIP_WHATIF_FAILED = "the planner could not plan it with hypothetical indexes"
SKIP_MULTIPLE = "more than one statement in one entry"
SKIP_TOO_LARGE = "too large to analyze"


@dataclass(frozen=True)
class Origin:
    """A statement's calls and time on one server, when the workload is merged from several (`--all`)."""

    target: str
    calls: int
    total_time_ms: float


@dataclass(frozen=True)
class Statement:
    """One workload entry: a normalized statement from pg_stat_statements, or a statement from a file or log."""

    query: str
    calls: int = 1
    total_time_ms: float = 0.0
    rows: int = 0
    shared_blks_hit: int = 0
    shared_blks_read: int = 0
    source: str = "file"
    queryid: int | None = None
    cancelled: bool = False  # cancelled by statement_timeout: it ran at least that long and never finished
    origins: tuple[Origin, ...] = ()  # merged from several servers: each one's share


@dataclass(frozen=True)
class Skipped:
    query: str
    reason: str
    detail: str = ""
    calls: int = 0
    total_time_ms: float = 0.0


TableKey = tuple[str, str]  # (schema, table)


@dataclass(frozen=True)
class Constant:
    """A predicate with a constant a partial index can carry: `status = 'open'`, `deleted_at IS NULL`."""

    column: str
    op: str  # "=", "IS NULL", "IS NOT NULL"
    value: str | int | float | bool | None = None


@dataclass(frozen=True)
class ParamUse:
    """Where a `$n` parameter sits, so a realistic value can be drawn from the column's pg_stats."""

    table: TableKey | None
    column: str | None
    op: str  # "=", "in", "any", ">", ">=", "<", "<=", "between_low", "between_high", "like", "limit", "offset",
    # "arithmetic" (an operand of `$1 + $2`)


@dataclass
class TableUse:
    """What one statement asks of one table."""

    table: TableKey
    equality: list[str] = field(default_factory=list)
    range: list[str] = field(default_factory=list)
    join: list[str] = field(default_factory=list)
    sort: list[str] = field(default_factory=list)
    group: list[str] = field(default_factory=list)
    like: list[str] = field(default_factory=list)  # LIKE 'prefix%'
    referenced: set[str] = field(default_factory=set)
    constants: list[Constant] = field(default_factory=list)
    updated: set[str] = field(default_factory=set)
    star: bool = False

    def add(self, bucket: list[str], column: str) -> None:
        if column not in bucket:
            bucket.append(column)
        self.referenced.add(column)

    @property
    def searched(self) -> set[str]:
        """Columns an index could lead with for this statement."""
        return {*self.equality, *self.range, *self.join, *self.like, *self.sort[:1], *self.group[:1]}


@dataclass
class Analysis:
    """A statement the advisor can use, with its per-table column uses."""

    statement: Statement
    kind: str  # select, update, delete, insert
    tables: dict[TableKey, TableUse]
    params: dict[int, ParamUse]
    has_limit: bool = False
    text: str = ""  # the statement as parsed and planned: pg_stat_statements' placeholders made valid


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    not_null: bool = False
    btree: bool = True  # has a default B-tree operator class
    pattern_opclass: str | None = None  # what a B-tree needs for LIKE 'x%' (None: C collation, the default serves)
    null_frac: float | None = None
    n_distinct: float | None = None  # pg_stats convention: negative = fraction of rows
    most_common_vals: tuple[str, ...] = ()
    most_common_freqs: tuple[float, ...] = ()
    histogram_bounds: tuple[str, ...] = ()
    avg_width: int | None = None
    correlation: float | None = None


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    reltuples: float
    relpages: int
    size_bytes: int
    columns: dict[str, ColumnInfo]
    n_tup_ins: int = 0
    n_tup_upd: int = 0
    n_tup_hot_upd: int = 0
    n_tup_del: int = 0
    index_count: int = 0

    @property
    def key(self) -> TableKey:
        return (self.schema, self.name)

    def distinct(self, column: str) -> float:
        """Estimated number of distinct values (pg_stats' negative n_distinct is a fraction of the rows)."""
        info = self.columns.get(column)
        rows = max(self.reltuples, 1.0)
        if not info or info.n_distinct is None or info.n_distinct == 0:
            return max(rows / 10, 1.0)
        return info.n_distinct if info.n_distinct > 0 else max(-info.n_distinct * rows, 1.0)


@dataclass(frozen=True)
class ExistingIndex:
    """An index as pg_index describes it: key columns (None for an expression), INCLUDE columns, predicate."""

    schema: str
    name: str
    table: TableKey
    key_columns: tuple[str | None, ...]
    include_columns: tuple[str, ...]
    key_opclasses: tuple[str | None, ...]  # None: the type's default operator class
    predicate: str | None
    method: str
    unique: bool
    primary: bool
    constraint: str | None  # the constraint it backs, if any
    valid: bool
    scans: int
    size_bytes: int
    definition: str
    advised: bool = False  # built from pgops' advice: its COMMENT says so


# The COMMENT fix.sql and --apply put on each index they build, to tell it from the application's own.
ADVISED = "pgops advise-indexes"


@dataclass
class Catalog:
    database: str
    server_version: int
    search_path: list[str]
    tables: dict[TableKey, TableInfo]
    indexes: list[ExistingIndex]
    stats_reset: datetime | None = None
    database_bytes: int = 0  # pg_database_size: what an index's size is weighed against

    def resolve(self, name: str, schema: str | None = None) -> TableInfo | None:
        if schema:
            return self.tables.get((schema, name))
        for path_schema in self.search_path:
            found = self.tables.get((path_schema, name))
            if found:
                return found
        return None

    def indexes_on(self, table: TableKey) -> list[ExistingIndex]:
        return [index for index in self.indexes if index.table == table]


@dataclass(frozen=True)
class Candidate:
    """A B-tree index worth costing: key columns in order, INCLUDE columns, and an optional partial predicate."""

    table: TableKey
    columns: tuple[str, ...]
    include: tuple[str, ...] = ()
    predicate: tuple[Constant, ...] = ()
    opclasses: tuple[str | None, ...] = ()  # per key column; empty or None: the default operator class

    def opclass(self, position: int) -> str | None:
        return self.opclasses[position] if position < len(self.opclasses) else None

    def describe(self) -> str:
        keys = [f"{c} {self.opclass(n)}" if self.opclass(n) else c for n, c in enumerate(self.columns)]
        text = f"{self.table[0]}.{self.table[1]} ({', '.join(keys)})"
        if self.include:
            text += f" INCLUDE ({', '.join(self.include)})"
        if self.predicate:
            text += " WHERE " + " AND ".join(describe_constant(c) for c in self.predicate)
        return text


def describe_constant(constant: Constant) -> str:
    if constant.op == "=":
        value = f"'{constant.value}'" if isinstance(constant.value, str) else str(constant.value).lower()
        return f"{constant.column} = {value}"
    return f"{constant.column} {constant.op}"


@dataclass(frozen=True)
class QueryCost:
    """A statement's estimated cost without and with an index; `generic_*` from the generic plan when it has $n."""

    query: str
    queryid: int | None
    calls: int
    total_time_ms: float
    before: float
    after: float
    generic_before: float | None = None
    generic_after: float | None = None
    origins: tuple[Origin, ...] = ()  # the servers it ran on, when the workload is merged from several

    @property
    def saving(self) -> float:
        return (self.before - self.after) / self.before if self.before > 0 else 0.0


@dataclass
class Recommendation:
    name: str
    candidate: Candidate
    create_sql: str
    drop_sql: str
    size_bytes: int
    writes: int  # index entries to maintain over the statistics window
    write_overhead_ms: float
    ends_hot_updates: bool
    saved_ms: float
    validated: bool
    queries: list[QueryCost]
    comment_sql: str = ""  # COMMENT ON INDEX ... IS ADVISED


@dataclass(frozen=True)
class Rejection:
    index: str
    reason: str


class Review(StrEnum):
    """Why an existing index is worth a second look."""

    DUPLICATE = "duplicate"
    REDUNDANT = "redundant"  # its columns lead another index's
    UNUSED = "unused"
    INVALID = "invalid"


@dataclass(frozen=True)
class DropSuggestion:
    index: str
    table: str
    kind: Review
    reason: str
    size_bytes: int
    drop_sql: str


@dataclass
class Advice:
    database: str
    generated_at: datetime
    sources: list[str]
    thresholds: dict[str, str]
    hypopg: bool
    hypopg_note: str
    statements: int
    analyzed: int
    recommendations: list[Recommendation] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    drops: list[DropSuggestion] = field(default_factory=list)
    duration_s: float = 0.0
    lock_timeout_ms: int = 5000  # the script's SET lock_timeout ([advisor] lock_timeout)
    build_timeout_ms: int = 0  # the script's SET statement_timeout for the builds ([advisor] build_timeout)
    left_out: dict[str, int] = field(default_factory=dict)  # statements the filters left out, by reason
    unit: str = "ms"  # what saved_ms and total_time_ms count: ms, estimated ms, or cost (no timings in the source)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for skip in self.skipped:
            counts[skip.reason] = counts.get(skip.reason, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))


@dataclass(frozen=True)
class AdvisorOptions:
    """Per-run choices; None means the [advisor] setting."""

    from_file: Path | None = None
    from_log: Path | None = None
    min_calls: int | None = None
    min_total_time_ms: float | None = None
    top: int | None = None
    max_indexes: int | None = None
    max_size: int | None = None
    user: str | None = None
    use_hypopg: bool = True
    include_pg_stat_statements: bool | None = None  # default: only when no file or log is given
    # read pg_stat_statements on each of these servers (a primary and its standbys) and merge, instead of the
    # one the advice is computed on
    merge_from: tuple[Target, ...] = ()
    # told of each statement planned; the CLI draws it, the daemon leaves it quiet
    progress: Progress = field(default=QUIET, compare=False, repr=False)
