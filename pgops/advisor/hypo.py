"""Planner costs with and without hypothetical indexes (hypopg), never executing the user's statements.

Every EXPLAIN runs in a READ ONLY transaction on a connection with the advisor's statement_timeout. Statements
with `$n` parameters are costed twice as they are: the generic plan (what a prepared statement may settle on,
with default selectivities) and a custom plan with realistic values drawn from pg_stats, because the generic
plan wrongly rejects good range indexes; under hypothetical indexes, the custom plan alone where it can be made.
hypopg's functions are called schema-qualified, each hypothetical index is dropped after use, and
`hypopg_reset()` runs every `BATCH` indexes and on every exit path.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import psycopg
from psycopg import sql

from pgops.advisor.model import Analysis, Candidate, Catalog, ParamUse
from pgops.advisor.normalize import plannable
from pgops.advisor.parse import count_parameters
from pgops.advisor.script import index_definition
from pgops.advisor.size import estimate_size
from pgops.errors import PgopsError
from pgops.resources import MARK

BATCH = 500  # hypothetical indexes between resets, far below hypopg's ~2,500 OID limit
DISABLED_COST = 1.0e9  # up to PostgreSQL 17 a path taken although disabled costs 1e10 more
_names = itertools.count(1)


class PlanError(Exception):
    """The planner refused the statement (unknown parameter types, a function that no longer exists...)."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class Costs:
    """Total cost of the plan that would run (custom plan with real values when it could be built) and of the
    generic plan; the hypothetical indexes the chosen plan uses."""

    cost: float
    generic: float | None
    used: frozenset[str]


def hypopg_schema(conn: psycopg.Connection) -> str | None:
    row = conn.execute(
        MARK + "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'hypopg'"
    ).fetchone()
    return row[0] if row else None


class Planner:
    def __init__(self, conn: psycopg.Connection, catalog: Catalog, hypopg: str | None = None) -> None:
        self.conn = conn
        self.catalog = catalog
        self.hypopg = hypopg
        self._created = 0
        self._live: dict[Candidate, int] = {}
        self._types: dict[str, list[str]] = {}  # the parameter types a statement planned with
        self.refused: dict[Candidate, str] = {}  # candidates hypopg would not create, and why
        self._unindexed = False
        self._by_oid: dict[int, Candidate] = {}  # the live hypothetical indexes by oid
        self._parallel_floor: int | None = None
        conn.read_only = True

    # -- costs -------------------------------------------------------------------------------------------------

    def costs(self, analysis: Analysis, *, generic_plan: bool = True) -> Costs:
        """The statement's plan costs under the current (hypothetical) indexes; raises PlanError. Without
        `generic_plan`, a statement with realistic values and known parameter types is planned once, custom
        (its generic cost is then None): what the what-if loop needs, at half the planning."""
        text = analysis.text or plannable(analysis.statement.query)
        count = count_parameters(text)
        if count == 0:
            cost, used = self._explain(sql.SQL(text))
            return Costs(cost, None, used)
        values = realistic_values(analysis, self.catalog, count)
        if not generic_plan and values is not None and text in self._types:
            try:
                cost, used = self._prepared(text, values, "force_custom_plan", self._types[text])
                return Costs(cost, None, used)
            except PlanError:
                pass  # the values do not fit: as below
        generic, generic_used = self._generic(text, count, analysis)
        if values is None:
            return Costs(generic, generic, generic_used)
        try:
            cost, used = self._prepared(text, values, "force_custom_plan", self._types.get(text, []))
        except PlanError:
            return Costs(generic, generic, generic_used)  # the values do not fit: the generic plan decides
        return Costs(cost, generic, used)

    def unindexed_cost(self, analysis: Analysis) -> float | None:
        """The statement's plan cost with no index at all (index and bitmap scans off): a cost no index, built
        or hypothetical, changes. None where the planner could not avoid an index (its cost then carries the
        penalty of a disabled path) or refuses the statement."""
        self._unindexed = True
        try:
            cost = self.costs(analysis).cost
        except PlanError:
            return None
        finally:
            self._unindexed = False
        return cost if cost < DISABLED_COST else None

    def _settings(self) -> None:
        """Inside a planning transaction: the settings of this plan."""
        if self._unindexed:
            for setting in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"):
                self.conn.execute(sql.SQL("SET LOCAL {} = off").format(sql.Identifier(setting)))

    def _generic(self, text: str, count: int, analysis: Analysis) -> tuple[float, frozenset[str]]:
        """The generic plan, through PREPARE with each parameter's type: its column's where the statement
        compares it with one, else the first of _FALLBACK_TYPES the statement plans with (remembered)."""
        known = parameter_types(analysis, self.catalog, count)
        tried = [self._types[text]] if text in self._types else _typings(known)
        failure: PlanError | None = None
        for types in tried:
            for _ in range(count + 1):
                try:
                    result = self._prepared(text, ["NULL"] * count, "force_generic_plan", types)
                except PlanError as exc:
                    failure = failure or exc
                    # `CONCAT($20, x)`, `SELECT $1 AS channel`: the server names the parameter it can't type
                    untyped = _PARAMETER.search(str(exc)) if exc.sqlstate == INDETERMINATE_DATATYPE else None
                    number = int(untyped.group(1)) if untyped else 0
                    if not 1 <= number <= count or types[number - 1] == "text":
                        break
                    types = [*types[: number - 1], "text", *types[number:]]
                    continue
                self._types[text] = types
                return result
        if self.catalog.server_version < 160000:
            assert failure is not None
            raise failure
        return self._explain(sql.SQL(text), generic=True)  # 16+: the server infers what it can

    def _explain(self, statement: sql.Composable, *, generic: bool = False) -> tuple[float, frozenset[str]]:
        try:
            with self.conn.transaction():
                self._settings()
                return self._explain_in_transaction(statement, generic=generic)
        except psycopg.Error as exc:
            raise PlanError(_message(exc), exc.sqlstate) from None

    def _prepared(self, text: str, values: list[str], mode: str, types: list[str]) -> tuple[float, frozenset[str]]:
        """Cost through PREPARE/EXECUTE; the prepared statement is deallocated by name (never DEALLOCATE ALL)."""
        label = f"pgops_advisor_{next(_names)}"
        name = sql.Identifier(label)
        args = sql.SQL(", ").join(sql.SQL("NULL") if v == "NULL" else sql.Literal(v) for v in values)
        try:
            with self.conn.transaction():
                self.conn.execute(sql.SQL("SET LOCAL plan_cache_mode = {}").format(sql.Literal(mode)))
                self._settings()
                declared = sql.SQL(", ").join(sql.SQL(t) for t in types) if types else None
                prepare = "PREPARE {} ({}) AS {}" if declared else "PREPARE {} AS {}"
                parts = (name, declared, sql.SQL(text)) if declared else (name, sql.SQL(text))
                self.conn.execute(sql.SQL(prepare).format(*parts))
                return self._explain_in_transaction(sql.SQL("EXECUTE {}({})").format(name, args))
        except psycopg.Error as exc:
            raise PlanError(_message(exc), exc.sqlstate) from None
        finally:
            # PREPARE outlives a rolled-back transaction: deallocate this one statement, by its name.
            with suppress(psycopg.Error), self.conn.transaction():
                if self.conn.execute(MARK + "SELECT 1 FROM pg_prepared_statements WHERE name = %s", [label]).fetchone():
                    self.conn.execute(sql.SQL("DEALLOCATE {}").format(name))

    def _explain_in_transaction(
        self, statement: sql.Composable, *, generic: bool = False
    ) -> tuple[float, frozenset[str]]:
        """Total cost and index names of the plan; never EXPLAIN ANALYZE: the statement does not run."""
        options = sql.SQL("GENERIC_PLAN, FORMAT JSON" if generic else "FORMAT JSON")
        explain = sql.SQL("EXPLAIN ({}) {}").format(options, statement)
        plan = self._plan(explain)
        limit = self._unbuildable_parallel_scan(plan)
        if limit is not None:
            # Plan again with the parallel scans of indexes that small ruled out, as the built index would be.
            setting = sql.Literal(f"{limit // 1024 + 8}kB")
            self.conn.execute(sql.SQL("SET LOCAL min_parallel_index_scan_size = {}").format(setting))
            plan = self._plan(explain)
        return float(plan["Total Cost"]), frozenset(_index_names(plan))

    def _plan(self, explain: sql.Composable) -> dict:
        row = self.conn.execute(explain).fetchone()
        assert row is not None
        return (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]["Plan"]

    def _unbuildable_parallel_scan(self, plan: dict) -> int | None:
        """hypopg's size for a hypothetical index runs well above the built index's (size.py's tests), and the
        planner scans an index in parallel only from `min_parallel_index_scan_size` up: a parallel scan of a
        hypothetical index that, built, would be under that size is a plan the built index can't have (TPC-DS
        q35: a 1.6 M plan where the built index keeps 10.2 M). The largest such index's hypopg size, or None."""
        sizes = []
        for node in _nodes(plan):
            match = _HYPOTHETICAL.match(node.get("Index Name", "")) if node.get("Parallel Aware") else None
            candidate = self._by_oid.get(int(match.group(1))) if match else None
            if candidate is None or estimate_size(self.catalog, candidate) >= self._min_parallel_index_scan():
                continue
            row = self.conn.execute(
                sql.SQL("SELECT {}.hypopg_relation_size(%s)").format(sql.Identifier(self.hypopg or "public")),
                [int(match.group(1))],  # type: ignore[union-attr]
            ).fetchone()
            sizes.append(int(row[0]) if row and row[0] is not None else 0)
        return max(sizes) if sizes else None

    def _min_parallel_index_scan(self) -> int:
        if self._parallel_floor is None:
            row = self.conn.execute(
                MARK + "SELECT setting::bigint * 8192 FROM pg_settings WHERE name = 'min_parallel_index_scan_size'"
            ).fetchone()
            self._parallel_floor = int(row[0]) if row else 0
        return self._parallel_floor

    # -- hypothetical indexes ----------------------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[None]:
        """Start clean and leave no hypothetical index behind, whatever happens inside."""
        self._reset()
        try:
            yield
        finally:
            self._reset()

    @contextmanager
    def hypothetical(self, candidate: Candidate) -> Iterator[tuple[str, int]]:
        """A hypothetical index for the candidate: its name (as EXPLAIN shows it) and estimated size."""
        assert self.hypopg is not None
        schema = sql.Identifier(self.hypopg)
        oid, name = self._create(candidate)
        try:
            size_row = self.conn.execute(sql.SQL("SELECT {}.hypopg_relation_size(%s)").format(schema), [oid]).fetchone()
            yield name, int(size_row[0]) if size_row else 0
        finally:
            self._drop(oid)

    def configure(self, candidates: frozenset[Candidate]) -> None:
        """Make exactly `candidates` the hypothetical indexes the planner sees (creating and dropping the
        difference from the last set, so successive sets that differ by one index cost one call), but for those
        hypopg refuses, which are left out and listed in `refused`."""
        assert self.hypopg is not None
        if self._created + len(candidates - self._live.keys()) > BATCH:
            self._reset()
        for gone in self._live.keys() - candidates:
            self._drop(self._live.pop(gone))
        for new in candidates - self._live.keys() - self.refused.keys():
            try:
                self._live[new] = self._create(new)[0]
            except PlanError as exc:  # planned without it: it can show no saving
                self.refused[new] = str(exc)

    def _create(self, candidate: Candidate) -> tuple[int, str]:
        schema = sql.Identifier(self.hypopg or "public")
        if self._created >= BATCH:
            self._reset()
        definition = index_definition(candidate, None).as_string(self.conn)
        try:
            row = self.conn.execute(
                sql.SQL("SELECT indexrelid, indexname FROM {}.hypopg_create_index(%s)").format(schema), [definition]
            ).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            raise
        except psycopg.Error as exc:  # hypopg refuses this index (a type, an expression, a table gone since)
            raise PlanError(f"hypopg could not create {candidate.describe()}: {_message(exc)}") from None
        assert row is not None
        self._created += 1
        self._by_oid[int(row[0])] = candidate
        return int(row[0]), str(row[1])

    def _drop(self, oid: int) -> None:
        self._by_oid.pop(oid, None)
        with suppress(psycopg.Error):
            drop = sql.SQL("SELECT {}.hypopg_drop_index(%s)").format(sql.Identifier(self.hypopg or "public"))
            self.conn.execute(drop, [oid])

    def _reset(self) -> None:
        if self.hypopg is None:
            return
        try:
            self.conn.execute(sql.SQL("SELECT {}.hypopg_reset()").format(sql.Identifier(self.hypopg)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PgopsError(
                f"can't use hypopg ({_message(exc)}): GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {self.hypopg} "
                "to the pgops role, or pass --no-hypopg"
            ) from None
        self._created = 0
        self._live.clear()
        self._by_oid.clear()


_HYPOTHETICAL = re.compile(r"^<(\d+)>")  # hypopg names its indexes "<oid>btree_..."


def _nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _index_names(plan: dict) -> Iterator[str]:
    if "Index Name" in plan:
        yield plan["Index Name"]
    for child in plan.get("Plans", ()):
        yield from _index_names(child)


def _message(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    text = (diag.message_primary if diag and diag.message_primary else str(exc)).strip().splitlines()
    return text[0] if text else type(exc).__name__


# Types tried, in order, for a parameter nothing in the statement types: a constant compared with no column is
# most often a number (`d_month_seq BETWEEN $1 AND $1 + $2`: unknown + unknown is ambiguous), sometimes text.
_FALLBACK_TYPES = ("unknown", "integer", "numeric", "text")
INDETERMINATE_DATATYPE = "42P18"  # "could not determine data type of parameter $n", in any lc_messages
_PARAMETER = re.compile(r"\$(\d+)")


def _typings(known: list[str]) -> list[list[str]]:
    if "unknown" not in known:
        return [known]
    return [[fallback if t == "unknown" else t for t in known] for fallback in _FALLBACK_TYPES]


def parameter_types(analysis: Analysis, catalog: Catalog, count: int) -> list[str]:
    """Each `$n`'s type for PREPARE: its column's type where the statement compares it with one (so that
    `id = ANY(ARRAY[$1, $2])` plans), `unknown` (inferred from the statement) elsewhere."""
    types = []
    for number in range(1, count + 1):
        use = analysis.params.get(number)
        table = catalog.tables.get(use.table) if use and use.table else None
        column = table.columns.get(use.column) if table and use and use.column else None
        if use and use.op in ("limit", "offset"):
            types.append("bigint")
        elif use and use.op == "arithmetic":
            types.append("integer")  # any number plans alike; integer keeps an integer column's index usable
        elif column is None or (use and use.op == "like"):
            types.append("unknown")
        else:
            types.append(column.type + ("[]" if use and use.op == "any" else ""))
    return types


def realistic_values(analysis: Analysis, catalog: Catalog, count: int) -> list[str] | None:
    """A plausible value for every `$1..$count` from the column's pg_stats, or None when one has none."""
    values = []
    for number in range(1, count + 1):
        use = analysis.params.get(number)
        value = _value_for(use, catalog) if use else None
        if value is None:
            return None
        values.append(value)
    return values


# Where in the histogram a range bound sits: `created_at > $1` usually asks for the recent tail.
_RANGE_POSITION = {">": 0.9, ">=": 0.9, "<": 0.1, "<=": 0.1, "between_low": 0.45, "between_high": 0.55}


def _value_for(use: ParamUse, catalog: Catalog) -> str | None:
    if use.op == "limit":
        return "20"
    if use.op == "offset":
        return "0"
    if use.table is None or use.column is None or use.op == "like":
        return None
    table = catalog.tables.get(use.table)
    column = table.columns.get(use.column) if table else None
    if column is None:
        return None
    histogram, common = column.histogram_bounds, column.most_common_vals
    if use.op in _RANGE_POSITION:
        if histogram:
            return histogram[min(len(histogram) - 1, int(len(histogram) * _RANGE_POSITION[use.op]))]
        return common[0] if common else None
    # Equality: a typical value outside the common ones when there is a histogram (a key, an email), else the
    # least common of the common values (the `status = 'open'` a query looks for).
    value = histogram[len(histogram) // 2] if histogram else (common[-1] if common else None)
    if value is not None and use.op == "any":
        return "{" + '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' + "}"
    return value
