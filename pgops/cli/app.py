"""The typer application and the state its commands share; each job's commands live in their own module."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path

import typer

from pgops import __version__, output
from pgops.config import Settings, load_settings, parse_duration
from pgops.errors import PgopsError
from pgops.logs import setup_logging

app = typer.Typer(
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
