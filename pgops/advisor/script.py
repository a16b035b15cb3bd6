"""The advice as a script a DBA reviews and runs (`psql -v ON_ERROR_STOP=1 -f fix.sql`) or as JSON, and the DDL
builders the rest of the advisor uses; the tables of `--format table` are drawn by `pgops/cli/advisor.py`.

The script is plain statements (CREATE INDEX CONCURRENTLY can't run in a transaction block) under a
`SET lock_timeout`, each `IF NOT EXISTS`, so running it twice is harmless.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import timedelta
from typing import Any

from psycopg import sql

from pgops.advisor.model import ADVISED, Advice, Candidate, Constant, QueryCost, describe_constant
from pgops.output import human_bytes, human_duration
from pgops.sqltext import Script, identifier, literal

NAME_LIMIT = 63  # NAMEDATALEN - 1 bytes


def index_name(candidate: Candidate, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """Deterministic and within 63 bytes; a short digest of the definition keeps variants apart, and a name that
    is `taken` (a relation of the schema, or another proposal) gets it too, so `IF NOT EXISTS` never mistakes
    another index for this one."""
    base = "_".join([candidate.table[1], *candidate.columns])
    digest = hashlib.sha1(candidate.describe().encode()).hexdigest()[:6]
    if candidate.include or candidate.predicate or any(candidate.opclasses):
        kind = "part" if candidate.predicate else "incl" if candidate.include else "pattern"
        base = f"{base}_{kind}"
        suffix = f"_{digest}_idx"
    else:
        suffix = "_idx"
    base = re.sub(r"[^A-Za-z0-9_]", "_", base)
    if len((base + suffix).encode()) > NAME_LIMIT or base + suffix in taken:
        suffix = f"_{digest}_idx"
        base = base.encode()[: NAME_LIMIT - len(suffix)].decode(errors="ignore")
    name, number = base + suffix, 1
    while name in taken:  # the digest of another definition collided: count on
        number += 1
        name = f"{base[: NAME_LIMIT - len(suffix) - len(str(number)) - 1]}_{number}{suffix}"
    return name


def _predicate(constant: Constant) -> sql.Composable:
    column = identifier(constant.column)
    if constant.op == "=":
        return sql.SQL("{} = {}").format(column, literal(constant.value))
    return sql.SQL("{} {}").format(column, sql.SQL("IS NULL" if constant.op == "IS NULL" else "IS NOT NULL"))


def _key(candidate: Candidate, position: int) -> sql.Composable:
    column = identifier(candidate.columns[position])
    opclass = candidate.opclass(position)
    return sql.SQL("{} {}").format(column, identifier(opclass)) if opclass else column


def index_definition(
    candidate: Candidate, name: str | None, *, concurrently: bool = False, if_not_exists: bool = False
) -> sql.Composed:
    """`CREATE INDEX ... ON schema.table USING btree (...) INCLUDE (...) WHERE ...`, identifiers quoted."""
    parts: list[sql.Composable] = [sql.SQL("CREATE INDEX")]
    if concurrently:
        parts.append(sql.SQL("CONCURRENTLY"))
    if if_not_exists:
        parts.append(sql.SQL("IF NOT EXISTS"))
    if name:
        parts.append(identifier(name))
    parts.append(
        sql.SQL("ON {}.{} USING btree ({})").format(
            identifier(candidate.table[0]),
            identifier(candidate.table[1]),
            sql.SQL(", ").join(_key(candidate, n) for n in range(len(candidate.columns))),
        )
    )
    if candidate.include:
        parts.append(sql.SQL("INCLUDE ({})").format(sql.SQL(", ").join(map(identifier, candidate.include))))
    if candidate.predicate:
        parts.append(sql.SQL("WHERE {}").format(sql.SQL(" AND ").join(map(_predicate, candidate.predicate))))
    return sql.SQL(" ").join(parts)


def drop_statement(schema: str, name: str) -> sql.Composed:
    return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(identifier(schema), identifier(name))


def comment_statement(schema: str, name: str) -> sql.Composed:
    """Marks an index as built from pgops' advice, which a later run reads back (`ExistingIndex.advised`)."""
    return sql.SQL("COMMENT ON INDEX {}.{} IS {}").format(identifier(schema), identifier(name), sql.Literal(ADVISED))


def _one_line(text: str, limit: int = 110) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def ms_text(value: float) -> str:
    return human_duration(timedelta(milliseconds=value))


def weight_text(advice: Advice, value: float) -> str:
    return f"{value:,.0f} cost" if advice.unit == "cost" else ms_text(value)


def _saves(advice: Advice, saved: float, total: float) -> str:
    if advice.unit == "cost":
        return f"cuts ~{saved:,.0f} of {total:,.0f} plan cost x calls (no timings in this source)"
    estimated = " (estimated from plan cost where not measured)" if advice.unit != "ms" else ""
    return f"saves ~{ms_text(saved)} of {ms_text(total)} statement time{estimated}"


def _origins(advice: Advice, queries: list[QueryCost]) -> str:
    """Where an index's statements ran, when the workload was merged from several servers: each server's calls
    and time, the heaviest first."""
    calls: dict[str, int] = {}
    time_ms: dict[str, float] = {}
    for query in queries:
        for origin in query.origins:
            calls[origin.target] = calls.get(origin.target, 0) + origin.calls
            time_ms[origin.target] = time_ms.get(origin.target, 0.0) + origin.total_time_ms
    return "; ".join(
        f"{name} {calls[name]:,} calls, {weight_text(advice, time_ms[name])}"
        for name in sorted(calls, key=lambda n: (-time_ms[n], n))
    )


def render_sql(advice: Advice, *, explain: bool = False) -> str:
    """The reviewable script; `explain` adds every rejected candidate and skipped statement with its reason.

    Every name and text from the database goes into a comment through `Script.comment`, every statement is a
    composed one: a DBA runs this file as superuser."""
    script = Script()
    # Before any text from the database: this file is UTF-8, and psycopg wrote its literals for these settings.
    script.statement(sql.SQL("SET client_encoding = 'UTF8'"))
    script.statement(sql.SQL("SET standard_conforming_strings = on"))
    script.comment(f"pgops advise-indexes for database {advice.database}")
    script.comment(f"generated {advice.generated_at:%Y-%m-%d %H:%M:%S %Z} in {advice.duration_s:.1f}s")
    script.comment(f"sources: {', '.join(advice.sources)}")
    script.comment("thresholds: " + ", ".join(f"{key}={value}" for key, value in advice.thresholds.items()))
    script.comment(
        f"validated with hypopg: planner costs with and without hypothetical indexes ({advice.hypopg_note})"
        if advice.hypopg
        else f"UNVALIDATED: {advice.hypopg_note}; estimates are rules over pg_stats selectivity"
    )
    script.comment(
        "run with: psql -v ON_ERROR_STOP=1 -f THIS_FILE   (not inside a transaction block; safe to run twice)"
    )
    script.blank()
    script.statement(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(advice.lock_timeout_ms)}ms")))
    script.statement(sql.SQL("SET statement_timeout = {}").format(sql.Literal(f"{int(advice.build_timeout_ms)}ms")))
    script.blank()
    if not advice.recommendations:
        script.comment("no index proposed" + ("" if explain else " (run with --explain to see why)"))
        script.blank()
    for number, rec in enumerate(advice.recommendations, 1):
        total = sum(q.total_time_ms for q in rec.queries)
        script.comment(f"{number}. {rec.candidate.describe()}")
        script.comment(
            f"   {_saves(advice, rec.saved_ms, total)}; size ~{human_bytes(rec.size_bytes)}; "
            f"write overhead ~{ms_text(rec.write_overhead_ms)} ({rec.writes:,} index entries"
            + (", ends HOT updates" if rec.ends_hot_updates else "")
            + ")"
            + ("" if rec.validated else "; UNVALIDATED")
        )
        if any(query.origins for query in rec.queries):
            script.comment(f"   ran on: {_origins(advice, rec.queries)}")
        for query in rec.queries:
            generic = (
                f" (generic plan {query.generic_before:,.1f} → {query.generic_after:,.1f})"
                if query.generic_before is not None and query.generic_after is not None
                else ""
            )
            script.comment(
                f"   {query.calls:,} calls, {weight_text(advice, query.total_time_ms)}: cost {query.before:,.1f} → "
                f"{query.after:,.1f}{generic}: {_one_line(query.query)}"
            )
        script.statement(sql.SQL(rec.create_sql))
        if rec.comment_sql:
            script.statement(sql.SQL(rec.comment_sql))
        script.commented(sql.SQL(rec.drop_sql), "rollback: ")
        script.blank()
    if advice.drops:
        script.comment("existing indexes to review (commented out: check each before dropping)")
        for drop in advice.drops:
            script.commented(sql.SQL(drop.drop_sql), note=f"{drop.kind}: {drop.reason}")
        script.blank()
    if explain:
        if advice.left_out:
            script.comment("statements the filters left out")
            for reason, count in advice.left_out.items():
                script.comment(f"  {count} {reason}")
            script.blank()
        if advice.rejected:
            script.comment("rejected candidates")
            for r in advice.rejected:
                script.comment(f"  {r.index}: {r.reason}")
            script.blank()
        if advice.skipped:
            script.comment("skipped statements")
            for s in advice.skipped:
                detail = ": " + _one_line(s.detail, 80) if s.detail else ""
                script.comment(f"  {s.reason}{detail}: {_one_line(s.query, 80)}")
            script.blank()
    script.comment(f"summary: {summary(advice)}")
    return script.text()


def summary(advice: Advice) -> str:
    skipped = ", ".join(f"{count} {reason}" for reason, count in advice.skipped_by_reason.items())
    left_out = "; ".join(f"{count} {reason}" for reason, count in advice.left_out.items())
    return (
        f"{advice.statements} statements read"
        + (f" ({sum(advice.left_out.values())} left out: {left_out})" if left_out else "")
        + f", {advice.analyzed} analyzed, {len(advice.skipped)} skipped"
        + (f" ({skipped})" if skipped else "")
        + f"; {len(advice.recommendations)} indexes proposed, {len(advice.rejected)} candidates rejected, "
        f"{len(advice.drops)} existing indexes to review"
    )


def render_json(advice: Advice) -> dict[str, Any]:
    data = dataclasses.asdict(advice)
    data["skipped_by_reason"] = advice.skipped_by_reason
    data["summary"] = summary(advice)
    for rec, source in zip(data["recommendations"], advice.recommendations, strict=True):
        rec["index"] = source.candidate.describe()
        rec["predicate"] = " AND ".join(describe_constant(c) for c in source.candidate.predicate) or None
    return data
