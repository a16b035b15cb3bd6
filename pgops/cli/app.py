"""The typer application and the state its commands share; each job's commands live in their own module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from pgops import __version__, output
from pgops.config import Settings, load_settings, parse_duration, parse_size
from pgops.errors import PgopsError
from pgops.logs import setup_logging


class _Group(TyperGroup):
    """pgops' top-level group. A bad option or argument value (a number out of range, a word where a number goes,
    an unknown choice) is bad input like any other: one line and exit 3, not typer's usage box and exit 2. Usage
    mistakes (an unknown option, a missing argument) keep click's usage message and exit 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _bad_value_is_an_error():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _bad_value_is_an_error():  # every subcommand's options are parsed inside the group's invoke
            return super().invoke(ctx)


# click's, or the copy newer typers vendor: the module typer.BadParameter comes from has both
_MissingParameter = getattr(sys.modules[typer.BadParameter.__module__], "MissingParameter", ())


@contextmanager
def _bad_value_is_an_error() -> Iterator[None]:
    try:
        yield
    except _MissingParameter:
        raise
    except typer.BadParameter as exc:
        message = " ".join(exc.format_message().split()).rstrip(".").replace(": Value error, ", ": ")
        raise PgopsError(message[:1].lower() + message[1:]) from None


app = typer.Typer(
    cls=_Group,
    name="pgops",
    help="PostgreSQL operations: debounced materialized-view refresh, batched cleanup, index advice, "
    "pool reports, and a daemon that runs them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class State:
    """Global options, with settings loaded on first use so `--help` never touches a config file."""

    config_path: Path | None = None
    dsn_option: str | None = None
    debug: bool = False
    _overrides: dict[str, object] = field(default_factory=dict)

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path, dsn=self.dsn_option)

    @property
    def dsn(self) -> str:
        return self.settings.dsn


def state(ctx: typer.Context) -> State:
    return ctx.ensure_object(State)


FormatOption = typer.Option(output.Format.table, "--format", help="table or json.")


def duration_option(text: str | None, option: str) -> timedelta | None:
    """An option's duration text (`30s`, `5m`), or a one-line error naming the option."""
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise PgopsError(f"{option}: {exc}") from None


def size_option(text: str | None, option: str, *, minimum: int = 0) -> int | None:
    """An option's size text (`2GB`), or a one-line error naming the option."""
    if text is None:
        return None
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise PgopsError(f"{option}: {exc}") from None
    if size < minimum:
        raise PgopsError(f"{option}: must be at least {minimum}B, got {text!r}")
    return size


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pgops {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", "-c", envvar="PGOPS_CONFIG", help="Path of pgops.toml (default: ./pgops.toml if present)."
    ),
    dsn: str | None = typer.Option(
        None,
        "--dsn",
        help="Database URL; overrides PGOPS_DATABASE_URL, DATABASE_URL and \\[database] url in pgops.toml.",
        show_default=False,
    ),
    debug: bool = typer.Option(False, "--debug", help="Verbose logs, and a traceback for unexpected errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print pgops' version and exit."
    ),
) -> None:
    ctx.obj = State(config_path=config, dsn_option=dsn, debug=debug)
    setup_logging(debug)
