"""`advise`: read the workload, parse it, generate candidates, cost them (hypopg when installed, pg_stats rules
otherwise), choose for the whole workload, and review existing indexes. The daemon and the CLI both call it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

import psycopg

from pgops import metrics
from pgops.advisor import rules
from pgops.advisor.candidates import Extensions, generate
from pgops.advisor.catalog import read_catalog
from pgops.advisor.hypo import PlanError, Planner, hypopg_schema
from pgops.advisor.model import (
    SKIP_PLAN_FAILED,
    SKIP_WHATIF_FAILED,
    Advice,
    AdvisorOptions,
    Analysis,
    Candidate,
    Catalog,
    QueryCost,
    Recommendation,
    Rejection,
    Skipped,
    Statement,
)
from pgops.advisor.parse import analyze
from pgops.advisor.redundant import review
from pgops.advisor.script import comment_statement, drop_statement, index_definition, index_name
from pgops.advisor.select import Baseline, Budget, Problem, TableWrites, choose, write_overhead
from pgops.advisor.size import estimate_size
from pgops.advisor.weights import DEFAULT_MS_PER_COST, Planned, Unit, weigh
from pgops.advisor.whatif import WhatIf
from pgops.advisor.workload import (
    LeftOut,
    StatementFilter,
    read_file,
    read_log,
    read_merged,
    read_pg_stat_statements,
    read_statement_timeout,
)
from pgops.config import Settings
from pgops.db import ConnectOptions, connect
from pgops.progress import track
from pgops.resources import MARK

STATEMENTS_PER_CANDIDATE = 100


def advise(dsn: str, settings: Settings, options: AdvisorOptions | None = None) -> Advice:
    """Index advice for the database at `dsn`; statements come from pg_stat_statements unless a file or log
    is given (both may be combined with it by `include_pg_stat_statements=True`)."""
    options = options or AdvisorOptions()
    started = time.monotonic()
    try:
        with connect(
            dsn, settings.database, ConnectOptions(statement_timeout=settings.advisor.statement_timeout)
        ) as conn:
            _untracked(conn)
            left_out: dict[str, int] = {}
            statements, sources = read_workload(conn, settings, options, left_out)
            advice = analyze_workload(conn, settings, statements, options, sources=sources)
            advice.left_out = left_out
    except Exception:
        metrics.ADVISOR_RUNS.labels(outcome="error").inc()
        raise
    advice.duration_s = time.monotonic() - started
    metrics.ADVISOR_RUNS.labels(outcome="ok").inc()
    metrics.ADVISOR_DURATION.observe(advice.duration_s)
    metrics.ADVISOR_PROPOSED.set(len(advice.recommendations))
    metrics.ADVISOR_LAST_SUCCESS.set_to_current_time()
    return advice


def _untracked(conn: psycopg.Connection) -> None:
    """Keep the advisor's own EXPLAINs and hypopg calls out of pg_stat_statements, where the role may say so
    (a superuser setting); elsewhere they are left out by shape when the workload is read."""
    try:
        with conn.transaction():
            conn.execute("SET pg_stat_statements.track = 'none'")
    except psycopg.Error:
        pass  # not a superuser, or pg_stat_statements not loaded: nothing to turn off


def read_workload(
    conn: psycopg.Connection, settings: Settings, options: AdvisorOptions, left_out: dict[str, int] | None = None
) -> tuple[list[Statement], list[str]]:
    """The statements of every source asked for; `left_out` gets, for each filter that left statements of
    pg_stat_statements out, how many and which option brings them in."""
    statements: list[Statement] = []
    sources: list[str] = []
    if options.from_file:
        statements += read_file(options.from_file)
        sources.append(f"file {options.from_file}")
    if options.from_log:
        database = conn.execute(MARK + "SELECT current_database()").fetchone()
        statements += read_log(options.from_log, database[0] if database else None, read_statement_timeout(conn))
        sources.append(f"log {options.from_log}")
    use_stats = options.include_pg_stat_statements
    if use_stats or (use_stats is None and not sources):
        cfg = settings.advisor
        min_calls = options.min_calls if options.min_calls is not None else cfg.min_calls
        min_total_ms = (
            options.min_total_time_ms
            if options.min_total_time_ms is not None
            else cfg.min_total_time.total_seconds() * 1000
        )
        top = options.top if options.top is not None else cfg.top
        counts = LeftOut()
        keep = StatementFilter(min_calls=min_calls, min_total_time_ms=min_total_ms, top=top, user=options.user)
        if options.merge_from:
            statements += read_merged(options.merge_from, settings, keep, counts)
            sources.append(f"pg_stat_statements of {', '.join(t.name for t in options.merge_from)}, merged")
        else:
            statements += read_pg_stat_statements(conn, keep, left_out=counts)
            sources.append("pg_stat_statements")
        if left_out is not None:
            reasons = {
                f"called fewer than {min_calls} times (--min-calls 1 brings them in)": counts.rare,
                f"under {min_total_ms:g} ms in all (--min-total-time 0 brings them in)": counts.light,
                f"past the {top} heaviest (--top {top + counts.past_top} brings them in)": counts.past_top,
            }
            left_out.update({reason: count for reason, count in reasons.items() if count})
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
    schema = hypopg_schema(conn) if options.use_hypopg else None
    planner = Planner(conn, catalog, schema)
    # Every statement is planned once as it is: its cost weighs a file's statements, and its plan says which
    # existing indexes the workload uses (an index built a minute ago has no scans counted yet).
    needed = list(range(len(analyses)))
    with planner.session():
        planning = track(options.progress, "planning statements", needed, len(needed))
        baselines, generic, in_use, unit = _baselines(planner, catalog, analyses, planning, skipped)
        # Write overhead is time; where the weights are plan cost, it is counted in cost at the default rate.
        per_weight = 1 / DEFAULT_MS_PER_COST if unit is Unit.cost else 1.0
        written = table_writes(analyses)
        whatif = WhatIf(planner, catalog, analyses, {n: b.cost for n, b in baselines.items()})
        extensions = Extensions(analyses, catalog)
        sizes: dict[Candidate, int] = {}
        overheads: dict[Candidate, tuple[int, float, bool]] = {}

        served: dict[Candidate, list[int]] = {}

        def statements_of(candidate: Candidate) -> list[int]:
            if candidate not in served:
                motivating = candidates.get(candidate, set())
                served[candidate] = [n for n in _relevant(candidate, motivating, analyses, searchers) if n in baselines]
            return served[candidate]

        def size(candidate: Candidate) -> int:
            if candidate not in sizes:
                sizes[candidate] = estimate_size(catalog, candidate, _covered_rows(catalog, candidate))
            return sizes[candidate]

        def overhead(candidate: Candidate) -> tuple[int, float, bool]:
            if candidate not in overheads:
                table = catalog.tables[candidate.table]
                overheads[candidate] = write_overhead(
                    table, candidate, written.get(candidate.table, TableWrites()), cfg.write_cost_ms
                )
            return overheads[candidate]

        unindexed = track(options.progress, "planning statements without indexes", list(baselines), len(baselines))
        reference = _cost_reference(planner, analyses, unindexed, catalog, unit) or _time_reference(
            planner, analyses, baselines, in_use, catalog
        )
        baselines_costs = {n: b.cost for n, b in baselines.items()}
        problem = Problem(
            baselines=baselines,
            seeds=sorted(candidates, key=lambda c: c.describe()),
            statements_of=statements_of,
            cost=whatif.cost,
            size=size,
            write_overhead_ms=lambda c: overhead(c)[1] * per_weight,
            extensions=extensions,
            workload_ms=reference(baselines_costs) if reference else _measured(analyses),
            reference=reference,
        )
        budget = Budget(
            max_indexes=options.max_indexes if options.max_indexes is not None else cfg.max_indexes,
            max_size=options.max_size if options.max_size is not None else cfg.max_size,
            min_share=cfg.min_saving,
            min_share_per_mb=cfg.min_saving_per_mb,
            # a cost's share is of the unindexed floor, understated beside a share of the database
            min_share_per_size=cfg.min_saving_per_size if unit is not Unit.cost else 0.0,
            database_bytes=catalog.database_bytes,
        )
        with options.progress.task("choosing indexes"):
            selection = choose(problem, budget)
    recommendations = []
    taken = {name for _, name in catalog.tables} | {index.name for index in catalog.indexes}
    for choice in selection.chosen:
        candidate = choice.candidate
        name = index_name(candidate, taken)
        taken.add(name)
        writes, write_ms, ends_hot = overhead(candidate)
        recommendations.append(
            Recommendation(
                name=name,
                candidate=candidate,
                create_sql=index_definition(candidate, name, concurrently=True, if_not_exists=True).as_string(conn),
                drop_sql=drop_statement(candidate.table[0], name).as_string(conn),
                comment_sql=comment_statement(candidate.table[0], name).as_string(conn),
                size_bytes=choice.size_bytes,
                writes=writes,
                write_overhead_ms=write_ms,
                ends_hot_updates=ends_hot,
                saved_ms=choice.saved_ms,
                validated=schema is not None,
                queries=[
                    QueryCost(
                        query=analyses[s.number].statement.query,
                        queryid=analyses[s.number].statement.queryid,
                        calls=analyses[s.number].statement.calls,
                        total_time_ms=baselines[s.number].total_time_ms,
                        before=s.before,
                        after=s.after,
                        generic_before=generic.get(s.number),
                        generic_after=None,
                        origins=analyses[s.number].statement.origins,
                    )
                    for s in choice.served
                ],
            )
        )
    # A candidate hypopg would not create showed no saving; a statement whose what-if plan failed counted as
    # no index helping it: both say why rather than abort the run.
    refused = {candidate.describe(): reason for candidate, reason in planner.refused.items()}
    not_chosen = [Rejection(r.index, refused[r.index]) if r.index in refused else r for r in selection.rejected]
    for number, reason in sorted(whatif.failures.items()):
        skipped.append(_skip(analyses[number].statement, SKIP_WHATIF_FAILED, reason))
    for skip in skipped:
        metrics.ADVISOR_SKIPPED.labels(reason=skip.reason).inc()
    return Advice(
        database=catalog.database,
        generated_at=datetime.now(UTC),
        sources=sources or ["workload entries"],
        thresholds=_thresholds(settings, options, relative=budget.relative),
        hypopg=schema is not None,
        hypopg_note=_hypopg_note(conn, schema, options),
        statements=len(statements),
        analyzed=len(analyses) - sum(skip.reason in (SKIP_PLAN_FAILED, SKIP_WHATIF_FAILED) for skip in skipped),
        recommendations=recommendations,
        rejected=rejected + not_chosen,
        skipped=skipped,
        drops=review(catalog, set().union(*in_use.values())),
        unit=str(unit),
        duration_s=time.monotonic() - started,
        lock_timeout_ms=int(cfg.lock_timeout.total_seconds() * 1000),
        build_timeout_ms=int(cfg.build_timeout.total_seconds() * 1000),
    )


def _baselines(
    planner: Planner, catalog: Catalog, analyses: list[Analysis], needed: Iterable[int], skipped: list[Skipped]
) -> tuple[dict[int, Baseline], dict[int, float | None], dict[int, frozenset[str]], Unit]:
    """Each needed statement's weight and cost with the existing indexes (planner, or rules without hypopg),
    the existing indexes its plan uses, and the weights' unit; a statement the planner refuses is skipped
    with its reason."""
    planned: dict[int, Planned] = {}
    generic: dict[int, float | None] = {}
    for number in needed:
        analysis = analyses[number]
        used: frozenset[str] = frozenset()
        if planner.hypopg is None:
            (cost, used), generic[number] = rules.existing_cost(analysis, catalog), None
        else:
            try:
                costs = planner.costs(analysis)
            except PlanError as exc:
                skipped.append(_skip(analysis.statement, SKIP_PLAN_FAILED, str(exc)))
                continue
            cost, generic[number], used = costs.cost, costs.generic, costs.used
        statement = analysis.statement
        planned[number] = Planned(statement.calls, statement.total_time_ms, cost, used)
    scans = {index.name: index.scans for index in catalog.indexes}
    weights, unit, _ = weigh(planned, scans)
    baselines = {number: Baseline(weights[number], p.cost) for number, p in planned.items()}
    return baselines, generic, {number: p.uses for number, p in planned.items()}, unit


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


def _measured(analyses: list[Analysis]) -> float:
    return sum(a.statement.total_time_ms for a in analyses)


def _cost_reference(
    planner: Planner, analyses: list[Analysis], numbers: Iterable[int], catalog: Catalog, unit: Unit
) -> Callable[[Mapping[int, float]], float] | None:
    """What the thresholds are shares of, where the weights are plan cost: the workload's cost given each
    statement's, counting a statement at least as its plan with no index at all (the planner's, with index scans
    off; as scans of its tables without hypopg), a cost no index changes, so that a second run on the applied
    advice judges against the same figure; the selection lowers it only where its set makes a plan cheaper
    still. None where time was measured: measured time stays the reference. `numbers`: the planned statements'."""
    if unit is not Unit.cost:
        return None
    floors = {}
    for number in numbers:
        scans = rules.statement_cost(analyses[number], catalog)
        unindexed = planner.unindexed_cost(analyses[number]) if planner.hypopg is not None else None
        floors[number] = max(scans, unindexed or 0.0)
    calls = {n: analyses[n].statement.calls for n in floors}

    def reference(costs: Mapping[int, float]) -> float:
        return sum(max(floors[n], costs[n]) * calls[n] for n in floors)

    return reference


def _time_reference(
    planner: Planner,
    analyses: list[Analysis],
    baselines: dict[int, Baseline],
    uses: dict[int, frozenset[str]],
    catalog: Catalog,
) -> Callable[[Mapping[int, float]], float] | None:
    """What the thresholds are shares of, where time was measured: the workload's time, counting a statement
    whose plan uses an index built from pgops' advice at least as its time before that index (its measured time
    x its plan cost with no index / its cost now). A run on applied advice then judges against about the time
    the first run saw, as with file input; statements on the application's own indexes count as measured."""
    advised = {index.name for index in catalog.indexes if index.advised}
    if planner.hypopg is None or not advised:
        return None
    floors = {}
    for number, base in baselines.items():
        floors[number] = base.total_time_ms
        if uses.get(number, frozenset()) & advised and base.cost > 0:
            unindexed = planner.unindexed_cost(analyses[number])
            if unindexed is not None:
                floors[number] = max(base.total_time_ms, base.total_time_ms * unindexed / base.cost)

    # statements the planner refused still count, as measured, as they do without advised indexes
    unplanned = sum(a.statement.total_time_ms for n, a in enumerate(analyses) if n not in baselines)

    def reference(costs: Mapping[int, float]) -> float:
        return unplanned + sum(
            max(floor, baselines[n].total_time_ms * costs[n] / baselines[n].cost if baselines[n].cost > 0 else 0.0)
            for n, floor in floors.items()
        )

    return reference


def _covered_rows(catalog: Catalog, candidate: Candidate) -> float:
    """Rows the index holds: all of the table's, or those its partial predicate keeps."""
    table = catalog.tables[candidate.table]
    rows = max(table.reltuples, 1.0)
    for constant in candidate.predicate:
        rows *= rules.constant_fraction(table, constant.column, constant.value)
    return rows


def _thresholds(settings: Settings, options: AdvisorOptions, *, relative: bool) -> dict[str, str]:
    """The thresholds in force: of the two size rules, the one this run applied (`Budget.relative`)."""
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
        "min_saving": f"{cfg.min_saving:.1%}",
        **(
            {"min_saving_per_size": f"{cfg.min_saving_per_size:g}"}
            if relative
            else {"min_saving_per_mb": f"{cfg.min_saving_per_mb:.2%}"}
        ),
        "write_cost_ms": str(cfg.write_cost_ms),
    }


def _hypopg_note(conn: psycopg.Connection, schema: str | None, options: AdvisorOptions) -> str:
    if schema is not None:
        row = conn.execute(MARK + "SELECT extversion FROM pg_extension WHERE extname = 'hypopg'").fetchone()
        return f"hypopg {row[0] if row else '?'} in schema {schema}"
    if not options.use_hypopg:
        return "hypopg not used (--no-hypopg)"
    major = conn.info.server_version // 10000  # the package of the server's own major
    return f"hypopg is not installed in this database (CREATE EXTENSION hypopg; package postgresql-{major}-hypopg)"
