"""`pgops status`: readiness of the database for pgops, for people and for alerting."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer
from rich.console import RenderableType
from rich.text import Text

from pgops import db, output, status
from pgops.cli import targets as targets_cli
from pgops.cli.app import app, state
from pgops.config import Settings, Target

STYLE = {status.OK: "green", status.WARNING: "yellow", status.CRITICAL: "red"}


def as_json(report: status.Status) -> dict[str, Any]:
    return {**dataclasses.asdict(report), "exit_code": report.exit_code}


def render(report: status.Status) -> RenderableType:
    # a styled Text: the table prints a plain string cell as it is, markup included
    rows = [(c.name, Text(c.level, style=STYLE[c.level]), c.detail) for c in report.checks]
    title = f"pgops status — PostgreSQL {report.server}, database {report.database} as {report.user}"
    return output.table(title, ["check", "state", "detail"], rows, keep=("check", "state"))


def _checked(url: str, settings: Settings, known: tuple[Target, ...]) -> status.Status:
    """The contract's run on the server at `url`; the other targets are its peers."""
    with db.connect(url, settings.database) as conn:
        plan = dataclasses.replace(status.prepare(conn, settings), peers=tuple(t for t in known if t.url != url))
        return status.run(conn, plan)


@app.command("status")
def status_command(
    ctx: typer.Context,
    fmt: output.Format = typer.Option(output.Format.table, "--format", help="table or json."),
    target: str | None = targets_cli.TargetOption,
    every: bool = targets_cli.AllOption,
) -> None:
    """Server, pgops schema, extensions, privileges and replication; exit 0 ok, 1 warning, 2 critical."""
    st = state(ctx)
    chosen = targets_cli.chosen(st, target, every)
    url = targets_cli.one_url(st, target)
    # the other targets: on a primary, those that are its standbys tell which session holds its xmin
    known = st.settings.targets()

    def one(this: Target) -> tuple[int, dict[str, Any], RenderableType]:
        report = _checked(this.url, st.settings, known)
        return report.exit_code, as_json(report), render(report)

    if chosen is not None and every:
        targets_cli.show(targets_cli.each(chosen, st, one), fmt)
    report = _checked(url, st.settings, known)
    if fmt is output.Format.json:
        output.print_json(as_json(report))
    else:
        output.console.print(render(report))
    raise typer.Exit(report.exit_code)
