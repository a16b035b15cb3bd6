"""Rendering shared by every report: rich tables on a terminal, JSON for machines, progress that stays quiet
when nobody watches."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pgops.sqltext import printable

console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("pgops")


class Format(StrEnum):
    table = "table"
    json = "json"


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Path | Enum):
        return str(value.value if isinstance(value, Enum) else value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"can't render {type(value).__name__} as JSON")


def to_json(value: Any) -> str:
    return json.dumps(value, default=_default, indent=2, sort_keys=False)


def print_json(value: Any) -> None:
    sys.stdout.write(to_json(value) + "\n")
    sys.stdout.flush()


def table(
    title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, keep: Sequence[str] = (), **kwargs: Any
) -> AdaptiveTable:
    """A rich table that reads at any width (see `AdaptiveTable`); None renders as an empty cell so missing data
    does not read as the word 'None'. `keep`: the columns that must always show whole (a pid, a name, an age).

    Cells are plain text, never rich markup, with control characters escaped: names and query text come from
    the database and may hold `[bold]` or a terminal escape sequence."""
    cells = [[cell if isinstance(cell, Text) else Text(_cell(cell)) for cell in row] for row in rows]
    return AdaptiveTable(title, list(columns), cells, frozenset(keep), kwargs)


# Narrowest a wrapping column may get before the table is shown stacked instead (longer words fold).
_MIN_WRAPPED = 12


@dataclasses.dataclass
class AdaptiveTable:
    """A table when it fits the width with its `keep` columns whole and the others wrapped (never cut to an
    ellipsis); otherwise stacked, one block per row: its `keep` cells on the first line, then `column: value`."""

    title: str | None
    columns: list[str]
    rows: list[list[Text]]
    keep: frozenset[str]
    options: dict[str, Any]

    def _needed(self) -> int:
        """Width of the table with each kept column whole and the others at their longest word (at most
        _MIN_WRAPPED): every column takes its padding and a border (3), the table one more border."""
        needed = 1
        for index, column in enumerate(self.columns):
            texts = [column, *(row[index].plain for row in self.rows)]
            if column in self.keep:
                needed += max(cell_len(line) for text in texts for line in text.splitlines() or [""])
            else:
                needed += min(_MIN_WRAPPED, max((cell_len(word) for text in texts for word in text.split()), default=1))
            needed += 3
        return needed

    def as_table(self) -> Table:
        # a Text title: names from the database in it (`[bold]`) are shown, never read as markup
        out = Table(title=Text(self.title) if self.title else None, title_justify="left", **self.options)
        for column in self.columns:
            out.add_column(column, no_wrap=column in self.keep, overflow="fold")
        for row in self.rows:
            out.add_row(*row)
        return out

    def _stacked(self) -> Iterator[RenderableType]:
        if self.title:
            yield Text(self.title, style="italic")
        kept = [i for i, column in enumerate(self.columns) if column in self.keep] or [0]
        for row in self.rows:
            # a bare number says nothing on its own: `pid 1234`, `rows 1,000`
            heads = [
                Text.assemble((self.columns[i] + " ", "dim"), row[i])
                if row[i].plain.replace(",", "").isdigit()
                else row[i]
                for i in kept
                if row[i].plain
            ]
            first = Text("  ").join(heads) or Text("-")
            first.stylize("bold")
            yield first
            for index, column in enumerate(self.columns):
                if index not in kept and row[index].plain:
                    yield Text.assemble(("  " + column + ": ", "dim"), row[index])

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[RenderableType]:
        if self._needed() <= options.max_width:
            yield self.as_table()
        else:
            yield from self._stacked()


def _cell(value: Any) -> str:
    return "" if value is None else printable(str(value))


# (below this much, units of this much, format), in order; the last step takes the rest (and NaN).
_SECONDS = (  # table cells: `250ms`, `12.3s`, `4.5m`, `1.2h`, `3.0d`
    (1, 0.001, "{:.0f}ms"),
    (120, 1, "{:.1f}s"),
    (7200, 60, "{:.1f}m"),
    (172800, 3600, "{:.1f}h"),
    (math.inf, 86400, "{:.1f}d"),
)
_MILLISECONDS = (  # statement times, down to microseconds: `0.031 ms`, `2.50 ms`, `12.3 s`, `4.5 min`, `1.2 h`
    (0.1, 1, "{:.3f} ms"),
    (10, 1, "{:.2f} ms"),
    (1000, 1, "{:.1f} ms"),
    (120_000, 1000, "{:.1f} s"),
    (7_200_000, 60_000, "{:.1f} min"),
    (math.inf, 3_600_000, "{:,.1f} h"),
)


def _scaled(value: float, steps: tuple[tuple[float, float, str], ...]) -> str:
    _, unit, form = next((step for step in steps if value < step[0]), steps[-1])
    return form.format(value / unit)


def human_duration(value: timedelta | float | None) -> str:
    """A time (a timedelta, or seconds) for a table cell."""
    if value is None:
        return ""
    return _scaled(value.total_seconds() if isinstance(value, timedelta) else float(value), _SECONDS)


def human_milliseconds(value: float) -> str:
    """A time in milliseconds (as pg_stat_statements counts them), to the microsecond when that small."""
    return _scaled(value, _MILLISECONDS)


def human_bytes(value: float | None) -> str:
    if value is None:
        return ""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def stderr_is_terminal() -> bool:
    return err_console.is_terminal


@contextmanager
def progress(description: str, total: float | None = None) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, **fields)`; a rich bar on a terminal, a log line every 5 s otherwise."""
    if stderr_is_terminal():
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task(description, total=total)

            def advance(n: float = 1, **_: Any) -> None:
                bar.advance(task, n)

            yield advance
        return
    done = 0.0
    last = time.monotonic()

    def advance(n: float = 1, **fields: Any) -> None:
        nonlocal done, last
        done += n
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            log.info("%s: %s%s", description, f"{done:g}", f"/{total:g}" if total else "", extra=fields)

    yield advance


class Bars:
    """The CLI's `pgops.progress.Progress`: `progress` above for each task a job reports."""

    def task(self, description: str, total: float | None = None) -> AbstractContextManager[Callable[..., None]]:
        return progress(description, total)
