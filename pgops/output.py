"""Rendering shared by every report: rich tables on a terminal, JSON for machines, progress that stays quiet
when nobody watches."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from rich.console import Console
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


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], **kwargs: Any) -> Table:
    """A rich table; None renders as an empty cell so missing data does not read as the word 'None'.

    Cells are plain text, never rich markup, with control characters escaped: names and query text come from
    the database and may hold `[bold]` or a terminal escape sequence."""
    out = Table(title=title, title_justify="left", **kwargs)
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(cell if isinstance(cell, Text) else Text(_cell(cell)) for cell in row))
    return out


def _cell(value: Any) -> str:
    return "" if value is None else printable(str(value))


def human_duration(value: timedelta | float | None) -> str:
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


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
