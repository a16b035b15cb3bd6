"""`pgops workload`: the statements that cost the most and the N+1 suspects, for a person (a view that reads at
80 columns) or a monitor (JSON, exit code 1 when there is a suspect)."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer
from rich.console import Group as RenderGroup
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from pgops import output
from pgops import workload as workload_job
from pgops.cli import targets as targets_cli
from pgops.cli.app import app, state
from pgops.config import INT4_MAX, Target
from pgops.output import human_milliseconds
from pgops.sqltext import printable
from pgops.workload.decide import HEAVY, N_PLUS_ONE, StatementCost, WorkloadReport

_STATUS_STYLE = {"ok": "green", "warning": "yellow"}
_KIND_STYLE = {N_PLUS_ONE: "bold yellow", HEAVY: "magenta"}
_KIND_LABEL = {N_PLUS_ONE: "N+1 suspect", HEAVY: "heavy statement"}


def as_json(report: WorkloadReport) -> dict[str, Any]:
    """The report as JSON; a queryid is a string: a 64-bit hash, which readers that use doubles (jq) would round."""
    data = dataclasses.asdict(report)
    for entry in data["top"] + data["suspects"]:
        entry["queryid"] = None if entry["queryid"] is None else str(entry["queryid"])
    return {**data, "status": report.status_name, "exit_code": report.status}


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _figures(cost: StatementCost) -> list[Text]:
    """Two short lines of figures: each fits 80 columns beside the rank, so the view never cuts a number."""
    first = Text(
        f"{human_milliseconds(cost.total_time_ms)} total, {cost.share:.1%} · {_plural(cost.calls, 'call')} · "
        f"{human_milliseconds(cost.mean_time_ms)} mean"
    )
    second = Text(
        f"{cost.rows_per_call:,.1f} rows/call · shared blocks: {cost.shared_blks_read:,} read, "
        f"{cost.shared_blks_hit:,} hit"
    )
    return [first, second]


def _block(cost: StatementCost, *, explain: set[str]) -> list[Text]:
    lines = _figures(cost)
    if cost.kind:
        lines[0].append(" · ")
        lines[0].append(_KIND_LABEL[cost.kind], style=_KIND_STYLE[cost.kind])
    lines.append(Text(printable(cost.query) or "(query text not visible to this role)", style="cyan"))
    if cost.kind in explain and cost.reason and cost.fix:
        lines.append(Text.assemble(("why: ", "bold"), cost.reason))
        lines.append(Text.assemble(("fix: ", "bold"), cost.fix))
    return lines


def _statements(title: str, costs: list[StatementCost], *, explain: set[str]) -> RenderableType:
    """A list of statements, each a rank beside its lines; the lines wrap at words (or fold), never end in '…'."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column(overflow="fold")
    for cost in costs:
        grid.add_row(Text(f"#{cost.rank}", style="bold"), Text("\n").join(_block(cost, explain=explain)))
        grid.add_row("", "")
    return RenderGroup(Text(title, style="bold underline"), grid)


def render(report: WorkloadReport) -> RenderableType:
    """The view: status and totals, the N+1 suspects with why and what fixes them, then the heaviest statements."""
    parts: list[RenderableType] = [
        Text.assemble(
            "workload report ",
            (report.status_name.upper(), _STATUS_STYLE[report.status_name]),
            f"  {_plural(report.suspect_count, 'N+1 suspect')}",
        ),
        Text(
            f"database {printable(report.database)}: {_plural(report.statement_count, 'statement')}, "
            f"{_plural(report.total_calls, 'call')}, {human_milliseconds(report.total_time_ms)} in all"
        ),
        Text(
            f"at {report.sampled_at:%Y-%m-%d %H:%M:%S %Z}"
            + (f", counted since {report.stats_reset:%Y-%m-%d %H:%M:%S %Z}" if report.stats_reset else ""),
            style="dim",
        ),
        Text(""),
    ]
    if report.visibility:
        parts += [Text(report.visibility, style="yellow"), Text("")]
    if not report.statement_count:
        parts.append(Text("pg_stat_statements holds no statement of this database yet"))
        return RenderGroup(*parts)
    if report.suspects:
        more = report.suspect_count - len(report.suspects)
        title = "N+1 suspects, by total time" + (f" ({more:,} more past --top)" if more else "")
        parts.append(_statements(title, report.suspects, explain={N_PLUS_ONE}))
    else:
        parts += [Text("no N+1 suspect", style="green"), Text("")]
    # a suspect's why and fix are above; a heavy statement's are given where it is listed
    title = f"The {_plural(len(report.top), 'statement')} with the most total time"
    parts.append(_statements(title, report.top, explain={HEAVY}))
    return RenderGroup(*parts)


@app.command("workload")
def workload(
    ctx: typer.Context,
    fmt: output.Format = typer.Option(output.Format.table, "--format", help="table or json."),
    top: int | None = typer.Option(
        None,
        "--top",
        min=1,
        max=INT4_MAX,
        help="How many statements (and suspects) to list (default: \\[workload] top).",
    ),
    show_queries: bool = typer.Option(False, "--show-queries", help="Show queries with their constants."),
    target: str | None = targets_cli.TargetOption,
    every: bool = targets_cli.AllOption,
) -> None:
    """The statements that cost the most and the N+1 suspects; exit 0, or 1 when there is an N+1 suspect."""
    st = state(ctx)
    chosen = targets_cli.chosen(st, target, every)
    settings = st.settings
    changes: dict[str, Any] = {}
    if show_queries:
        changes["mask_queries"] = False
    if top is not None:
        changes["top"] = top
    if changes:
        settings = dataclasses.replace(settings, workload=dataclasses.replace(settings.workload, **changes))
    if every:

        def one(this: Target) -> tuple[int, dict[str, Any], RenderableType]:
            with workload_job.open_connection(this.url, settings) as conn:
                found = workload_job.run(conn, workload_job.prepare(conn, settings))
            return found.status, as_json(found), render(found)

        assert chosen is not None
        targets_cli.show(targets_cli.each(chosen, st, one), fmt)
    with workload_job.open_connection(targets_cli.one_url(st, target), settings) as conn:
        report = workload_job.run(conn, workload_job.prepare(conn, settings))
    if fmt is output.Format.json:
        output.print_json(as_json(report))
    else:
        output.console.print(render(report))
    raise typer.Exit(report.status)
