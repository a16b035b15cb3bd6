"""`pgops advise-indexes`: propose the indexes the workload needs, as a script to review (or --apply them)."""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Group
from rich.text import Text

from pgops import replication
from pgops.advisor.model import Advice
from pgops.advisor.script import ms_text, summary, weight_text
from pgops.cli import targets as targets_cli
from pgops.cli.app import app, duration_option, size_option, state
from pgops.config import INT4_MAX, INT8_MAX
from pgops.errors import EXIT_OK, EXIT_WARNING, PgopsError
from pgops.output import Bars, console, err_console, human_bytes, print_json, table


class ScriptFormat(StrEnum):
    sql = "sql"
    json = "json"
    table = "table"


@app.command("advise-indexes")
def advise_indexes(
    ctx: typer.Context,
    from_file: Path | None = typer.Option(None, "--from-file", help="Read statements from this SQL file."),
    from_log: Path | None = typer.Option(
        None, "--from-log", help="Read slow and cancelled statements from this PostgreSQL log."
    ),
    with_stats: bool = typer.Option(
        False, "--with-pg-stat-statements", help="Also read pg_stat_statements when --from-file/--from-log is given."
    ),
    min_calls: int | None = typer.Option(
        None, "--min-calls", min=0, max=INT8_MAX, help="Ignore statements called fewer times."
    ),
    min_total_time: str | None = typer.Option(None, "--min-total-time", help="Ignore lighter statements (e.g. 1s)."),
    top: int | None = typer.Option(
        None, "--top", min=1, max=INT4_MAX, help="Read at most N statements, heaviest total time first."
    ),
    user: str | None = typer.Option(None, "--user", help="Only statements run by this role."),
    max_indexes: int | None = typer.Option(
        None, "--max-indexes", min=1, max=INT4_MAX, help="Propose at most N indexes."
    ),
    max_size: str | None = typer.Option(None, "--max-size", help="Total size budget of the proposed indexes (2GB)."),
    no_hypopg: bool = typer.Option(False, "--no-hypopg", help="Use pg_stats rules even when hypopg is installed."),
    explain: bool = typer.Option(False, "--explain", help="List every rejected candidate and skipped statement."),
    do_apply: bool = typer.Option(False, "--apply", help="Build the proposed indexes now, one at a time."),
    output_format: ScriptFormat = typer.Option(ScriptFormat.sql, "--format", help="sql (default), json or table."),
    target: str | None = targets_cli.TargetOption,
    every: bool = typer.Option(
        False,
        "--all",
        help="Merge pg_stat_statements of every target (a primary and its standbys); advice for the primary.",
    ),
) -> None:
    """Propose indexes for the workload, proven with the planner: `pgops advise-indexes > fix.sql`.

    Exit 0 when nothing is proposed, 1 when indexes are proposed (or built by --apply), 3 on error.
    """
    # sqlglot is heavy: only this command loads it, so every other command (and the daemon) starts light.
    from pgops.advisor.apply import Built, apply
    from pgops.advisor.model import AdvisorOptions
    from pgops.advisor.run import advise
    from pgops.advisor.script import render_json, render_sql

    least_time = duration_option(min_total_time, "--min-total-time")
    options = AdvisorOptions(
        from_file=from_file,
        from_log=from_log,
        min_calls=min_calls,
        min_total_time_ms=least_time.total_seconds() * 1000 if least_time is not None else None,
        top=top,
        max_indexes=max_indexes,
        max_size=size_option(max_size, "--max-size", minimum=1),
        user=user,
        use_hypopg=not no_hypopg,
        include_pg_stat_statements=True if with_stats else None,
        progress=Bars(),
    )
    st = state(ctx)
    settings = st.settings
    targets_cli.chosen(st, target, every)  # --target and --all together are refused
    url = targets_cli.one_url(st, target)
    if every:
        if from_file or from_log:
            raise PgopsError("--all merges pg_stat_statements of the targets: --from-file/--from-log read one source")
        # one database of one cluster: validated on its primary, which gets the one fix.sql
        primary, standbys = replication.cluster(settings.targets(), settings)
        options = dataclasses.replace(options, merge_from=(primary.target, *(m.target for m in standbys)))
        url = primary.target.url
    advice = advise(url, settings, options)
    if output_format is ScriptFormat.json:
        print_json(render_json(advice))
    elif output_format is ScriptFormat.table:
        console.print(render_tables(advice, explain=explain))
    else:
        typer.echo(render_sql(advice, explain=explain), nl=False)
    if do_apply and advice.recommendations:
        results = apply(url, settings, advice, Bars())
        for result in results:
            err_console.print(f"{result.name}: {result.outcome}{' — ' + result.detail if result.detail else ''}")
        if any(result.outcome is Built.FAILED for result in results):
            raise PgopsError("some indexes could not be built (see above); their INVALID leftovers were dropped")
    raise typer.Exit(EXIT_WARNING if advice.recommendations else EXIT_OK)


def render_tables(advice: Advice, *, explain: bool = False) -> Group:
    parts: list[Any] = [Text(summary(advice))]
    rows = [
        [
            rec.candidate.describe(),
            weight_text(advice, rec.saved_ms),
            human_bytes(rec.size_bytes),
            ms_text(rec.write_overhead_ms) + (" (ends HOT)" if rec.ends_hot_updates else ""),
            len(rec.queries),
        ]
        for rec in advice.recommendations
    ]
    if rows:
        title = "Proposed indexes " + ("(validated with hypopg)" if advice.hypopg else "(UNVALIDATED: no hypopg)")
        parts.append(table(title, ["index", "saves", "size", "write cost", "statements"], rows, keep=("saves", "size")))
    else:
        parts.append(Text("no index proposed" + ("" if explain else " (run with --explain to see why)")))
    if advice.drops:
        drop_rows = [[d.index, d.kind, human_bytes(d.size_bytes), d.reason] for d in advice.drops]
        columns = ["index", "kind", "size", "reason"]
        parts.append(table("Existing indexes to review", columns, drop_rows, keep=("kind", "size")))
    if advice.skipped_by_reason:
        skipped = list(advice.skipped_by_reason.items())
        parts.append(table("Skipped statements", ["reason", "count"], skipped, keep=("count",)))
    if explain and advice.rejected:
        parts.append(
            table("Rejected candidates", ["candidate", "reason"], [[r.index, r.reason] for r in advice.rejected])
        )
    return Group(*parts)
