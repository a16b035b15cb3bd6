"""The workload report's rules, pure: the statements that cost the most, the N+1 suspects, the heavy statements.

An N+1 suspect is the loop an ORM writes: one statement run once per row of an earlier result. Each call is cheap
(about one row, a tiny mean time), but it is called very often and all the calls together take a large share of
the statement time. A statement with the same total time spent in a few slow calls is the opposite case, a heavy
statement: its cost is in each call, and batching would not help.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pgops.config import WorkloadSettings
from pgops.errors import EXIT_OK, EXIT_WARNING, LEVELS, Level
from pgops.output import human_milliseconds
from pgops.pool_report.leaks import mask_query
from pgops.workload.read import HIDDEN_QUERY, Snapshot, StatementStats


class Kind(StrEnum):
    """Why a statement is listed: an N+1 suspect, or only heavy."""

    N_PLUS_ONE = "n+1 suspect"
    HEAVY = "heavy"


N_PLUS_ONE, HEAVY = Kind.N_PLUS_ONE, Kind.HEAVY


@dataclass(frozen=True)
class StatementCost:
    """One statement as the report shows it; `kind`, `reason` and `fix` only for a suspect or a heavy one."""

    rank: int  # by total time, over every statement of the snapshot
    queryid: int | None
    query: str  # constants masked unless asked for, whitespace folded, cut to query_length
    calls: int
    total_time_ms: float
    mean_time_ms: float
    share: float  # of all statement time in the snapshot, 0 to 1
    rows: int
    rows_per_call: float
    shared_blks_hit: int
    shared_blks_read: int
    kind: Kind | None = None
    reason: str | None = None  # which thresholds it passed, with its figures
    fix: str | None = None  # what usually fixes it


@dataclass(frozen=True)
class WorkloadReport:
    database: str
    sampled_at: datetime
    stats_reset: datetime | None
    statement_count: int
    total_calls: int
    total_time_ms: float
    top: list[StatementCost]  # the `top` heaviest by total time
    suspects: list[StatementCost]  # N+1 suspects by total time, at most `top` of them
    suspect_count: int  # all of them, also those past `top`
    thresholds: dict[str, float] = field(default_factory=dict)
    hidden_statements: int = 0  # other roles' statements whose text this role may not see
    visibility: str | None = None  # what is hidden and the GRANT that shows it

    @property
    def status(self) -> int:
        """Warning when there is an N+1 suspect: a monitor can alert on it; a heavy statement alone is not one."""
        return EXIT_WARNING if self.suspect_count else EXIT_OK

    @property
    def status_name(self) -> str:
        return str(self.outcome)

    @property
    def outcome(self) -> Level:
        return LEVELS[self.status]


def _limit_ms(value: float) -> str:
    return f"{value:g} ms"


def _percent(share: float) -> str:
    return f"{share * 100:g}%"


def shown_query(query: str, settings: WorkloadSettings) -> str:
    """pg_stat_statements already writes constants as `$n`; those it keeps (in utility statements, or recorded
    before normalization) are masked as in the pool report, unless asked for. Whitespace folded, cut short."""
    text = mask_query(query) if settings.mask_queries else query
    text = " ".join(text.split())
    limit = max(settings.query_length, 4)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_WORD = re.compile(r"\w+")
# What a join, a batch or EXPLAIN can change; a SAVEPOINT per row or a one-off CREATE INDEX is neither kind.
_QUERIES = frozenset({"select", "insert", "update", "delete", "merge", "with", "values", "table"})


def verb(query: str) -> str:
    """The statement's first word, lower case, past leading comments and parentheses ("" when there is none).

    A scan, not a regular expression: a pattern repeating over comments backtracks exponentially on a run of
    them (the advisor's first-word match did)."""
    i, n = 0, len(query)
    while i < n:
        if query[i].isspace() or query[i] == "(":
            i += 1
        elif query.startswith("/*", i):
            end = query.find("*/", i + 2)
            i = n if end == -1 else end + 2
        elif query.startswith("--", i):
            end = query.find("\n", i)
            i = n if end == -1 else end + 1
        else:
            break
    match = _WORD.match(query, i)
    return match[0].lower() if match else ""


def is_query(query: str) -> bool:
    """A query or DML statement, or one whose text is hidden (its figures alone then decide)."""
    return query == HIDDEN_QUERY or verb(query) in _QUERIES


def is_n_plus_one(stats: StatementStats, share: float, settings: WorkloadSettings) -> bool:
    """Called very often, about one row per call, each call tiny, and together a large share of the time."""
    return (  # the figures first: most statements fail one, and reading the text's first word costs more
        stats.calls >= settings.suspect_min_calls
        and stats.rows_per_call <= settings.suspect_max_rows_per_call
        and stats.mean_time_ms <= settings.suspect_max_mean_time.total_seconds() * 1000
        and share >= settings.suspect_min_share
        and is_query(stats.query)
    )


def is_heavy(stats: StatementStats, settings: WorkloadSettings) -> bool:
    return is_query(stats.query) and stats.mean_time_ms >= settings.heavy_mean_time.total_seconds() * 1000


def n_plus_one_reason(stats: StatementStats, share: float, settings: WorkloadSettings) -> str:
    return (
        f"{stats.calls:,} calls (at least {settings.suspect_min_calls:,}), "
        f"{stats.rows_per_call:,.1f} rows/call (at most {settings.suspect_max_rows_per_call:g}), "
        f"{human_milliseconds(stats.mean_time_ms)} mean (at most "
        f"{_limit_ms(settings.suspect_max_mean_time.total_seconds() * 1000)}), "
        f"{share:.1%} of all statement time (at least {_percent(settings.suspect_min_share)})"
    )


def n_plus_one_fix(query: str) -> str:
    """What usually replaces the loop, by what the statement does."""
    action = verb(query)
    if action == "insert":
        return (
            "insert the rows in one statement: a multi-row VALUES, INSERT ... SELECT FROM unnest($1, ...) with "
            "arrays, or COPY"
        )
    if action in ("update", "delete"):
        return f"{action} the rows in one statement: WHERE id = ANY($1) with an array of the keys"
    return (
        "fetch the rows in one statement: join this table in the query that yields the keys (an ORM's eager "
        "loading), or pass every key at once: WHERE id = ANY($1) with an array"
    )


def heavy_reason(stats: StatementStats, settings: WorkloadSettings) -> str:
    return (
        f"{stats.calls:,} call{'' if stats.calls == 1 else 's'}, "
        f"{human_milliseconds(stats.mean_time_ms)} mean (at least "
        f"{_limit_ms(settings.heavy_mean_time.total_seconds() * 1000)}), {stats.rows_per_call:,.1f} rows/call"
    )


HEAVY_FIX = (
    "each call is slow, not their number: EXPLAIN (ANALYZE, BUFFERS) it for a missing index or a large scan "
    "(pgops advise-indexes)"
)


def _cost(rank: int, stats: StatementStats, total_ms: float, settings: WorkloadSettings) -> StatementCost:
    share = stats.total_time_ms / total_ms if total_ms > 0 else 0.0
    kind = reason = fix = None
    if is_n_plus_one(stats, share, settings):
        kind, reason, fix = N_PLUS_ONE, n_plus_one_reason(stats, share, settings), n_plus_one_fix(stats.query)
    elif is_heavy(stats, settings):
        kind, reason, fix = HEAVY, heavy_reason(stats, settings), HEAVY_FIX
    return StatementCost(
        rank=rank,
        queryid=stats.queryid,
        query=shown_query(stats.query, settings),
        calls=stats.calls,
        total_time_ms=stats.total_time_ms,
        mean_time_ms=stats.mean_time_ms,
        share=share,
        rows=stats.rows,
        rows_per_call=stats.rows_per_call,
        shared_blks_hit=stats.shared_blks_hit,
        shared_blks_read=stats.shared_blks_read,
        kind=kind,
        reason=reason,
        fix=fix,
    )


def decide(snapshot: Snapshot, settings: WorkloadSettings) -> WorkloadReport:
    """Rank every statement by total time; keep the `top` heaviest and the N+1 suspects (also by total time)."""
    ranked = sorted(snapshot.statements, key=lambda s: s.total_time_ms, reverse=True)
    total_ms = sum(s.total_time_ms for s in ranked)
    share = (lambda s: s.total_time_ms / total_ms) if total_ms > 0 else (lambda s: 0.0)
    suspected = [(rank, s) for rank, s in enumerate(ranked, start=1) if is_n_plus_one(s, share(s), settings)]
    # only the statements shown are built: masking every text of 5,000 statements takes most of a second
    top = [_cost(rank, s, total_ms, settings) for rank, s in enumerate(ranked[: settings.top], start=1)]
    suspects = [_cost(rank, s, total_ms, settings) for rank, s in suspected[: settings.top]]
    # their figures still count (and can make a suspect): only the text, and so the fix's verb, is unknown
    hidden = sum(1 for s in ranked if s.query == HIDDEN_QUERY)
    visibility = (
        f"the text of {hidden:,} statement{'' if hidden == 1 else 's'} of other roles is hidden from "
        f"{snapshot.role or 'this role'}: GRANT pg_read_all_stats TO {snapshot.role or 'it'} shows it"
        if hidden
        else None
    )
    return WorkloadReport(
        database=snapshot.database,
        sampled_at=snapshot.sampled_at,
        stats_reset=snapshot.stats_reset,
        statement_count=len(ranked),
        total_calls=sum(s.calls for s in ranked),
        total_time_ms=total_ms,
        top=top,
        suspects=suspects,
        suspect_count=len(suspected),
        thresholds={
            "suspect_min_calls": settings.suspect_min_calls,
            "suspect_max_rows_per_call": settings.suspect_max_rows_per_call,
            "suspect_max_mean_time_ms": settings.suspect_max_mean_time.total_seconds() * 1000,
            "suspect_min_share": settings.suspect_min_share,
            "heavy_mean_time_ms": settings.heavy_mean_time.total_seconds() * 1000,
        },
        hidden_statements=hidden,
        visibility=visibility,
    )
