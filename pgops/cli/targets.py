"""`--target NAME` and `--all` of the report commands: which servers they read, and the combined view of several
(each server's section headed with its name, role and host; JSON an object keyed by target; the worst exit code).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import RenderableType
from rich.rule import Rule
from rich.text import Text

from pgops import db, output
from pgops.cli.app import State
from pgops.config import Target
from pgops.errors import EXIT_ERROR, PgopsError, first_line
from pgops.resources import read_sql

TargetOption = typer.Option(
    None, "--target", metavar="NAME", help="The server named \\[targets.NAME] in pgops.toml.", show_default=False
)
AllOption = typer.Option(False, "--all", help="Every target in pgops.toml, in one view; exit code: the worst.")

# what a report command does for one server: its exit code, its JSON and its view
Report = Callable[[Target], tuple[int, dict[str, Any], RenderableType]]


def chosen(st: State, name: str | None, every: bool) -> tuple[Target, ...] | None:
    """The targets asked for: one (--target), all (--all), or None for the one database URL as before."""
    if name is not None and every:
        raise PgopsError("--target and --all can't be combined")
    if every:
        return st.settings.targets()
    if name is not None:
        return (st.settings.target(name),)
    return None


def one_url(st: State, name: str | None) -> str:
    """The URL of `--target NAME`, else the database URL."""
    return st.settings.target(name).url if name is not None else st.dsn


def role(target: Target, st: State) -> str:
    """primary or standby, as the server says (`pg_is_in_recovery()`)."""
    with db.connect(target.url, st.settings.database) as conn:
        row = conn.execute(read_sql("replication/role.sql")).fetchone()
    return "standby" if row and row[0] else "primary"


@dataclass
class Section:
    target: Target
    host: str
    role: str | None
    exit_code: int
    data: dict[str, Any] | None = None
    view: RenderableType | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        head = {"target": self.target.name, "role": self.role, "host": self.host}
        if self.error is not None:
            return {**head, "error": self.error, "exit_code": self.exit_code}
        return {**head, **(self.data or {})}

    def heading(self) -> Text:
        return Text(f"{self.target.name}: {self.role or 'unreachable'}, {self.host}")


def each(targets: Sequence[Target], st: State, report: Report) -> list[Section]:
    """Run `report` on every target; one that fails is a section with its error (exit 3), and the rest still run."""
    sections = []
    for target in targets:
        host = db.describe(target.url)
        try:
            found = role(target, st)
            code, data, view = report(target)
        except PgopsError as exc:
            sections.append(Section(target, host, None, max(exc.exit_code, EXIT_ERROR), error=exc.message))
            continue
        except Exception as exc:  # a server that breaks mid-report: the others are still reported
            if st.debug:
                raise
            sections.append(Section(target, host, None, EXIT_ERROR, error=first_line(exc)))
            continue
        sections.append(Section(target, host, found, code, data, view))
    return sections


def show(sections: Sequence[Section], fmt: output.Format) -> None:
    """Print the combined view (or JSON keyed by target) and exit with the worst exit code."""
    if fmt is output.Format.json:
        output.print_json({s.target.name: s.as_json() for s in sections})
    else:
        for number, section in enumerate(sections):
            if number:
                output.console.print()
            output.console.print(Rule(section.heading(), align="left", style="bold"))
            if section.error is not None:
                output.console.print(Text(f"error: {section.error}", style="red"))
            elif section.view is not None:
                output.console.print(section.view)
    raise typer.Exit(max((s.exit_code for s in sections), default=0))
