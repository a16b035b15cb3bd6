"""`pgops status`: readiness of the database for pgops, for people and for alerting."""

from __future__ import annotations

import dataclasses

import typer
from rich.console import RenderableType
from rich.text import Text

from pgops import output, status
from pgops.cli.app import app, state

STYLE = {status.OK: "green", status.WARNING: "yellow", status.CRITICAL: "red"}


def render(report: status.Status) -> RenderableType:
    # a styled Text: the table prints a plain string cell as it is, markup included
    rows = [(c.name, Text(c.level, style=STYLE[c.level]), c.detail) for c in report.checks]
    title = f"pgops status — PostgreSQL {report.server}, database {report.database} as {report.user}"
    return output.table(title, ["check", "state", "detail"], rows, keep=("check", "state"))


@app.command("status")
def status_command(
    ctx: typer.Context,
    fmt: output.Format = typer.Option(output.Format.table, "--format", help="table or json."),
) -> None:
    """Server, pgops schema, extensions and privileges; exit 0 ok, 1 warning, 2 critical."""
    report = status.gather(state(ctx).dsn, state(ctx).settings)
    if fmt is output.Format.json:
        output.print_json({**dataclasses.asdict(report), "exit_code": report.exit_code})
    else:
        output.console.print(render(report))
    raise typer.Exit(report.exit_code)
