"""`advise`: read the workload, parse it, generate candidates, cost them (hypopg when installed, pg_stats rules
otherwise), choose for the whole workload, and review existing indexes. The daemon and the CLI both call it."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import psycopg

from pgops import metrics
from pgops.advisor import rules
from pgops.advisor.candidates import generate
from pgops.advisor.catalog import read_catalog
from pgops.advisor.hypo import PlanError, Planner, hypopg_schema
from pgops.advisor.model import (
    SKIP_PLAN_FAILED,
    Advice,
    AdvisorOptions,
    Analysis,
    Candidate,
    Catalog,
    QueryCost,
    Recommendation,
    Skipped,
    Statement,
)
from pgops.advisor.parse import analyze
from pgops.advisor.redundant import review
from pgops.advisor.script import drop_statement, index_definition, index_name
from pgops.advisor.select import Baseline, Option, TableWrites, choose, write_overhead
from pgops.advisor.workload import read_file, read_log, read_pg_stat_statements
from pgops.config import Settings
from pgops.db import connect
from pgops.output import progress

# A statement from a file has no measured time: weigh it by its plan cost at 10 µs per cost unit.
MS_PER_COST_UNIT = 0.01
LEAF_FILL = 0.9
ENTRY_OVERHEAD = 16  # index tuple header and line pointer, bytes
STATEMENTS_PER_CANDIDATE = 100


def advise(dsn: str, settings: Settings, options: AdvisorOptions | None = None) -> Advice:
    """Index advice for the database at `dsn`; statements come from pg_stat_statements unless a file or log
    is given (both may be combined with it by `include_pg_stat_statements=True`)."""
    options = options or AdvisorOptions()
    started = time.monotonic()
    try:
        with connect(dsn, settings.database, statement_timeout=settings.advisor.statement_timeout) as conn:
            statements, sources = read_workload(conn, settings, options)
            advice = analyze_workload(conn, settings, statements, options, sources=sources)
    except Exception:
        metrics.ADVISOR_RUNS.labels(outcome="error").inc()
        raise
    advice.duration_s = time.monotonic() - started
    metrics.ADVISOR_RUNS.labels(outcome="ok").inc()
    metrics.ADVISOR_DURATION.observe(advice.duration_s)
    metrics.ADVISOR_PROPOSED.set(len(advice.recommendations))
    metrics.ADVISOR_LAST_SUCCESS.set_to_current_time()
    return advice


def read_workload(
    conn: psycopg.Connection, settings: Settings, options: AdvisorOptions
) -> tuple[list[Statement], list[str]]:
    statements: list[Statement] = []
    sources: list[str] = []
    if options.from_file:
        statements += read_file(options.from_file)
        sources.append(f"file {options.from_file}")
    if options.from_log:
        database = conn.execute("SELECT current_database()").fetchone()
        statements += read_log(options.from_log, database[0] if database else None)
        sources.append(f"log {options.from_log}")
    use_stats = options.include_pg_stat_statements
    if use_stats or (use_stats is None and not sources):
        cfg = settings.advisor
        statements += read_pg_stat_statements(
            conn,
            min_calls=options.min_calls if options.min_calls is not None else cfg.min_calls,
            min_total_time_ms=(
                options.min_total_time_ms
                if options.min_total_time_ms is not None
                else cfg.min_total_time.total_seconds() * 1000
            ),
            top=options.top if options.top is not None else cfg.top,
            user=options.user,
        )
        sources.append("pg_stat_statements")
    return statements, sources


def analyze_workload(
    conn: psycopg.Connection,
    settings: Settings,
    statements: list[Statement],
    options: AdvisorOptions,
    *,
    sources: list[str] | None = None,
) -> Advice:
    """Everything after reading the workload; the bench feeds synthetic entries here."""
    cfg = settings.advisor
    started = time.monotonic()
    catalog = read_catalog(conn)
    analyses: list[Analysis] = []
    skipped: list[Skipped] = []
    for statement in statements:
        result = analyze(statement, catalog)
        (skipped if isinstance(result, Skipped) else analyses).append(result)  # type: ignore[arg-type]
    candidates, rejected = generate(analyses, catalog)
    searchers = _searchers(analyses)
    relevant = {c: _relevant(c, motivating, analyses, searchers) for c, motivating in candidates.items()}
    schema = hypopg_schema(conn) if options.use_hypopg else None
    planner = Planner(conn, catalog, schema)
    # Only statements some candidate could serve are planned: the others can't change the choice.
    needed = sorted(set().union(*relevant.values()))
    baselines, generic = _baselines(planner, catalog, analyses, needed, skipped)
    written = table_writes(analyses)
    evaluated: list[Option] = []
    generic_after: dict[tuple[Candidate, int], float | None] = {}
    with progress("costing candidate indexes", total=len(candidates)) as advance, planner.session():
        for candidate, queries in relevant.items():
            advance()
            writes, overhead, ends_hot = write_overhead(
                catalog.tables[candidate.table],
                candidate,
                written.get(candidate.table, TableWrites()),
                cfg.write_cost_ms,
            )
            option = Option(candidate, 0, writes, overhead, ends_hot)
            planned = sorted(q for q in queries if q in baselines)
            if schema is None:
                option.size_bytes = estimate_size(catalog, candidate)
                option.after = {q: rules.estimate(analyses[q], candidate, catalog) for q in planned}
            else:
                with planner.hypothetical(candidate) as (name, size):
                    option.size_bytes = size
                    for q in planned:
                        try:
                            costs = planner.costs(analyses[q])
                        except PlanError:
                            continue
                        option.after[q] = costs.cost if name in costs.used else baselines[q].cost
                        generic_after[(candidate, q)] = costs.generic
            evaluated.append(option)
    chosen, not_chosen = choose(
        evaluated,
        baselines,
        max_indexes=options.max_indexes if options.max_indexes is not None else cfg.max_indexes,
        max_size=options.max_size if options.max_size is not None else cfg.max_size,
        min_saving=cfg.min_saving,
    )
    recommendations = []
    for choice in chosen:
        candidate = choice.option.candidate
        name = index_name(candidate)
        recommendations.append(
            Recommendation(
                name=name,
                candidate=candidate,
                create_sql=index_definition(candidate, name, concurrently=True, if_not_exists=True).as_string(conn),
                drop_sql=drop_statement(candidate.table[0], name).as_string(conn),
                size_bytes=choice.option.size_bytes,
                writes=choice.option.writes,
                write_overhead_ms=choice.option.write_overhead_ms,
                ends_hot_updates=choice.option.ends_hot_updates,
                saved_ms=choice.saved_ms,
                validated=schema is not None,
                queries=[
                    QueryCost(
                        query=analyses[q].statement.query,
                        queryid=analyses[q].statement.queryid,
                        calls=analyses[q].statement.calls,
                        total_time_ms=baselines[q].total_time_ms,
                        before=baselines[q].cost,
                        after=choice.option.after[q],
                        generic_before=generic.get(q),
                        generic_after=generic_after.get((candidate, q)),
                    )
                    for q in choice.queries
                ],
            )
        )
    for skip in skipped:
        metrics.ADVISOR_SKIPPED.labels(reason=skip.reason).inc()
    return Advice(
        database=catalog.database,
        generated_at=datetime.now(UTC),
        sources=sources or ["workload entries"],
        thresholds=_thresholds(settings, options),
        hypopg=schema is not None,
        hypopg_note=_hypopg_note(conn, schema, options),
        statements=len(statements),
        analyzed=len(analyses) - sum(skip.reason == SKIP_PLAN_FAILED for skip in skipped),
        recommendations=recommendations,
        rejected=rejected + not_chosen,
        skipped=skipped,
        drops=review(catalog),
        duration_s=time.monotonic() - started,
        lock_timeout_ms=int(cfg.lock_timeout.total_seconds() * 1000),
        build_timeout_ms=int(cfg.build_timeout.total_seconds() * 1000),
    )


def _baselines(
    planner: Planner, catalog: Catalog, analyses: list[Analysis], needed: list[int], skipped: list[Skipped]
) -> tuple[dict[int, Baseline], dict[int, float | None]]:
    """Each needed statement's weight and cost with the existing indexes (planner, or rules without hypopg);
    a statement the planner refuses is skipped with its reason."""
    baselines: dict[int, Baseline] = {}
    generic: dict[int, float | None] = {}
    with progress("planning statements", total=len(needed)) as advance:
        for number in needed:
            advance()
            analysis = analyses[number]
            if planner.hypopg is None:
                cost, generic[number] = rules.statement_cost(analysis, catalog), None
            else:
                try:
                    costs = planner.costs(analysis)
                except PlanError as exc:
                    skipped.append(_skip(analysis.statement, SKIP_PLAN_FAILED, str(exc)))
                    continue
                cost, generic[number] = costs.cost, costs.generic
            statement = analysis.statement
            weight = statement.total_time_ms or cost * MS_PER_COST_UNIT * statement.calls
            baselines[number] = Baseline(weight, cost)
    return baselines, generic


def _skip(statement: Statement, reason: str, detail: str) -> Skipped:
    return Skipped(statement.query, reason, detail, statement.calls, statement.total_time_ms)


def _searchers(analyses: list[Analysis]) -> dict[tuple[tuple[str, str], str], set[int]]:
    """(table, column) → the statements that search the table by that column."""
    found: dict[tuple[tuple[str, str], str], set[int]] = {}
    for number, analysis in enumerate(analyses):
        for key, use in analysis.tables.items():
            for column in use.searched:
                found.setdefault((key, column), set()).add(number)
    return found


def _relevant(
    candidate: Candidate,
    motivating: set[int],
    analyses: list[Analysis],
    searchers: dict[tuple[tuple[str, str], str], set[int]],
) -> list[int]:
    """The statements an index could serve: those it was built for, and any other that searches the table by
    its leading column (a B-tree helps nobody who does not); the heaviest `STATEMENTS_PER_CANDIDATE` of them,
    which carry the benefit, so a large workload costs each candidate in bounded time."""
    related = motivating | searchers.get((candidate.table, candidate.columns[0]), set())
    ranked = sorted(related, key=lambda n: (-analyses[n].statement.total_time_ms, n))
    return ranked[:STATEMENTS_PER_CANDIDATE]


def table_writes(analyses: list[Analysis]) -> dict[tuple[str, str], TableWrites]:
    """Rows inserted and updated per table by the workload's own statements (their calls when rows are unknown)."""
    writes: dict[tuple[str, str], TableWrites] = {}
    for analysis in analyses:
        if analysis.kind not in ("insert", "update"):
            continue
        rows = analysis.statement.rows or analysis.statement.calls
        for key, use in analysis.tables.items():
            target = writes.setdefault(key, TableWrites())
            if analysis.kind == "insert" and not use.referenced:
                target.inserted += rows
            elif use.updated:
                target.updated += rows
                target.updated_columns |= use.updated
    return writes


def estimate_size(catalog: Catalog, candidate: Candidate) -> int:
    """Leaf pages of a B-tree: rows (those matching a partial predicate) times entry width, at 90% fill."""
    table = catalog.tables[candidate.table]
    rows = max(table.reltuples, 1.0)
    for constant in candidate.predicate:
        rows *= rules.constant_fraction(table, constant.column, constant.value)
    width = ENTRY_OVERHEAD + sum(
        (table.columns[c].avg_width or 8) for c in (*candidate.columns, *candidate.include) if c in table.columns
    )
    return max(8192, int(rows * width / LEAF_FILL))


def _thresholds(settings: Settings, options: AdvisorOptions) -> dict[str, str]:
    cfg = settings.advisor
    min_total_ms = (
        options.min_total_time_ms
        if options.min_total_time_ms is not None
        else cfg.min_total_time.total_seconds() * 1000
    )
    return {
        "min_calls": str(options.min_calls if options.min_calls is not None else cfg.min_calls),
        "min_total_time_ms": f"{min_total_ms:g}",
        "user": options.user or "any",
        "top": str(options.top if options.top is not None else cfg.top),
        "max_indexes": str(options.max_indexes if options.max_indexes is not None else cfg.max_indexes),
        "max_size": str(options.max_size if options.max_size is not None else cfg.max_size),
        "min_saving": f"{cfg.min_saving:.0%}",
        "write_cost_ms": str(cfg.write_cost_ms),
    }


def _hypopg_note(conn: psycopg.Connection, schema: str | None, options: AdvisorOptions) -> str:
    if schema is not None:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'hypopg'").fetchone()
        return f"hypopg {row[0] if row else '?'} in schema {schema}"
    if not options.use_hypopg:
        return "hypopg not used (--no-hypopg)"
    major = conn.info.server_version // 10000  # the package of the server's own major
    return f"hypopg is not installed in this database (CREATE EXTENSION hypopg; package postgresql-{major}-hypopg)"
