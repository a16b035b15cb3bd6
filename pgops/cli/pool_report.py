"""`pgops pool-report`: connection saturation and leaks, for a person (rich view) or a monitor (JSON, exit code)."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import typer
from rich.console import Group as RenderGroup
from rich.console import RenderableType
from rich.live import Live
from rich.text import Text

from pgops import output
from pgops import pool_report as pool
from pgops.cli import targets as targets_cli
from pgops.cli.app import app, state
from pgops.config import INT4_MAX, Target, parse_duration
from pgops.errors import PgopsError
from pgops.output import human_bytes, human_duration
from pgops.pool_report.analyze import Report, StandbyUsage
from pgops.pool_report.limits import LEVEL_NAMES
from pgops.pool_report.sample import take_sample
from pgops.pool_report.terminate import Termination, candidates, terminate

_LEVEL_STYLE = {0: "green", 1: "yellow", 2: "bold red"}


def _level(level: int) -> Text:
    return Text(LEVEL_NAMES[level], style=_LEVEL_STYLE[level])


def as_json(report: Report) -> dict[str, Any]:
    return {**dataclasses.asdict(report), "status": report.status_name, "exit_code": report.status}


def render(report: Report) -> RenderableType:
    """The rich view: status, limits, problems, groups, PgBouncer pools, then what to change."""
    states = ", ".join(f"{count} {name}" for name, count in report.states.items() if count) or "none"
    parts: list[RenderableType] = [
        Text.assemble(
            "pool report ",
            (LEVEL_NAMES[report.status].upper(), _LEVEL_STYLE[report.status]),
            f"  {report.total} client connections ({states}) at {report.sampled_at:%Y-%m-%d %H:%M:%S %Z}",
        )
    ]
    columns = ["kind", "name", "used", "usable", "left", "used %", "level"]
    rows = [
        (u.kind, u.name, str(u.used), str(u.limit), str(u.left), f"{u.ratio:.0%}", _level(u.level))
        for u in report.limits
    ]
    parts.append(output.table("Limits", columns, rows, keep=columns))
    if report.pgbouncer:
        columns = ["database", "user", "clients", "waiting", "longest wait", "servers", "pool_size", "used %", "level"]
        rows = [
            (p.database, p.user, str(p.clients_active), str(p.clients_waiting), human_duration(p.maxwait_seconds),
             str(p.servers_used), str(p.pool_size), f"{p.ratio:.0%}", _level(p.level))
            for p in report.pgbouncer
        ]  # fmt: skip
        parts.append(output.table("PgBouncer pools", columns, rows, keep=("database", "user", "waiting", "level")))
    if report.problems:
        rows = [
            (p.kind, p.pid, p.database, p.user, p.application, p.client or "local", human_duration(p.age_seconds),
             p.detail, p.query, p.terminate)
            for p in report.problems
        ]  # fmt: skip
        columns = [
            "problem",
            "pid",
            "database",
            "user",
            "application",
            "client",
            "age",
            "detail",
            "last query",
            "to end it",
        ]
        parts.append(output.table("Leak signals", columns, rows, keep=("problem", "pid", "application", "age")))
    groups = [
        (g.database, g.user, g.application, g.client or "local", g.total,
         ", ".join(f"{n} {s}" for s, n in sorted(g.states.items())),
         f"{g.worst.kind} pid {g.worst.pid} ({human_duration(g.worst.age_seconds)})" if g.worst else "")
        for g in report.groups
    ]  # fmt: skip
    columns = ["database", "user", "application", "client", "sessions", "states", "worst offender"]
    title = "Connections by database, user, application and client"
    parts.append(output.table(title, columns, groups, keep=("application", "sessions")))
    if report.standbys:
        # lines, not a table: the session holding a standby's snapshot needs the width
        parts.append(Text("Standbys", style="italic"))
        parts += [_standby_line(s) for s in report.standbys]
    if report.visibility:
        parts.append(Text(f"can't see: {report.visibility}", style="yellow"))
    parts += [Text(f"recommendation: {line}") for line in report.recommendations]
    return RenderGroup(*parts)


def _standby_line(standby: StandbyUsage) -> Text:
    """`replica-1 at 10.0.0.2: streaming, replay lag 0 B, 0ms; holds the primary's xmin back by 5 transactions`"""
    where = f" at {standby.client}" if standby.client else ""
    if standby.state is None:
        line = f"{standby.name}{where}: its state, lag and xmin need pg_monitor"
    elif standby.replay_lag_bytes is None and standby.replay_lag_seconds is None:
        line = f"{standby.name}{where}: {standby.state}, replay lag unknown"
    else:
        lag = f"{human_bytes(standby.replay_lag_bytes) or '0 B'}, {human_duration(standby.replay_lag_seconds or 0.0)}"
        line = f"{standby.name}{where}: {standby.state}, replay lag {lag}"
    if standby.xmin_age is not None:
        line += f"; its hot_standby_feedback holds the primary's xmin back by {standby.xmin_age:,} transactions"
    if standby.held_by:
        line += f": the oldest snapshot is {standby.held_by}"
    return Text.assemble(_level(standby.level), " ", line)


def _show(report: Report, fmt: output.Format, terminated: list[Termination] | None) -> None:
    """Print the report; after a termination the JSON also lists what was ended (the view said it on stderr)."""
    if fmt is output.Format.json:
        extra = {} if terminated is None else {"terminated": [dataclasses.asdict(t) for t in terminated]}
        output.print_json({**as_json(report), **extra})
    else:
        output.console.print(render(report))


def _terminate(conn: psycopg.Connection, threshold: timedelta, yes: bool) -> list[Termination]:
    """List the sessions idle in a transaction over `threshold`, confirm, end them, and say what happened."""
    targets = candidates(take_sample(conn), threshold)
    if not targets:
        output.err_console.print(f"no session idle in a transaction for {human_duration(threshold)} or more")
        return []
    for b in targets:
        output.err_console.print(
            f"pid {b.pid}: {b.user}/{b.application or '-'} from {b.client or 'local'}, {b.state}",
            markup=False,
            highlight=False,
        )
    if not yes:
        if not sys.stdin.isatty():
            raise PgopsError(f"{len(targets)} session(s) to terminate: confirm with --yes (nothing was terminated)")
        if not typer.confirm(f"Terminate these {len(targets)} session(s)?", err=True):
            output.err_console.print("nothing was terminated")
            return []
    results = terminate(conn, targets, threshold)
    for done in results:
        verdict = "terminated" if done.terminated else "left alone (no longer idle in a transaction)"
        output.err_console.print(f"pid {done.pid}: {verdict}", highlight=False)
    return results


def _watch(sample: Callable[[], Report], fmt: output.Format, interval: float, count: int | None) -> Report:
    """Sample every `interval` seconds: redraw the view in place, or print one JSON document per sample."""
    live = Live(console=output.console, auto_refresh=False) if fmt is output.Format.table else None
    with live or contextlib.nullcontext():
        for number in range(count or sys.maxsize):
            if number:
                time.sleep(interval)
            report = sample()
            if live:
                live.update(render(report), refresh=True)
            else:
                output.print_json(as_json(report))
    return report


@app.command("pool-report")
def pool_report(
    ctx: typer.Context,
    fmt: output.Format = typer.Option(output.Format.table, "--format", help="table or json."),
    watch: float | None = typer.Option(
        None, "--watch", metavar="SECONDS", min=0.1, max=86400, help="Sample again every SECONDS, redrawing in place."
    ),
    count: int | None = typer.Option(
        None, "--count", min=1, max=INT4_MAX, help="With --watch: stop after this many samples (default: until Ctrl-C)."
    ),
    pgbouncer: str | None = typer.Option(
        None, "--pgbouncer", metavar="URL", help="PgBouncer admin console URL (database pgbouncer) to report pools."
    ),
    terminate_over: str | None = typer.Option(
        None,
        "--terminate-idle-in-transaction-over",
        metavar="DURATION",
        help="End sessions idle in a transaction this long (e.g. 10m), after a confirmation.",
    ),
    yes: bool = typer.Option(False, "--yes", help="Terminate without asking for confirmation."),
    show_queries: bool = typer.Option(False, "--show-queries", help="Show queries with their constants."),
    target: str | None = targets_cli.TargetOption,
    every: bool = targets_cli.AllOption,
) -> None:
    """Connections against every limit, leaked transactions and lock waits; exit 0/1/2 for ok/warning/critical."""
    st = state(ctx)
    chosen = targets_cli.chosen(st, target, every)
    settings = st.settings
    overrides = {"mask_queries": False} if show_queries else {}
    if pgbouncer:
        overrides["pgbouncer_url"] = pgbouncer
    settings = dataclasses.replace(settings, pool_report=dataclasses.replace(settings.pool_report, **overrides))
    if watch is not None and terminate_over:
        raise PgopsError("--terminate-idle-in-transaction-over can't be combined with --watch")
    if count is not None and watch is None:
        raise PgopsError("--count needs --watch")
    try:
        threshold = parse_duration(terminate_over) if terminate_over else None
    except ValueError as exc:
        raise PgopsError(f"--terminate-idle-in-transaction-over: {exc}") from None
    known = st.settings.targets()
    if every:
        one_server = {
            "--watch": watch is not None,
            "--terminate-idle-in-transaction-over": threshold is not None,
            "--pgbouncer": pgbouncer is not None,
        }
        for option, given in one_server.items():
            if given:
                raise PgopsError(f"{option} works on one server: pass --target NAME instead of --all")

        def one(this: Target) -> tuple[int, dict[str, Any], RenderableType]:
            with pool.open_connection(this.url, settings) as conn:
                peers = [t for t in known if t.url != this.url]
                # PgBouncer pools one server's clients: `--target NAME` reads its console
                plan = dataclasses.replace(pool.prepare(conn, settings), pgbouncer_url=None, peers=tuple(peers))
                found = pool.run(conn, plan).report
            return found.status, as_json(found), render(found)

        assert chosen is not None
        targets_cli.show(targets_cli.each(chosen, st, one), fmt)
    url = targets_cli.one_url(st, target)
    peers = [t for t in known if t.url != url]
    with pool.open_connection(url, settings) as conn:
        terminated = _terminate(conn, threshold, yes) if threshold is not None else None
        plan = dataclasses.replace(pool.prepare(conn, settings), peers=tuple(peers))
        if watch is None:
            report = pool.run(conn, plan).report
            _show(report, fmt, terminated)
        else:
            report = _watch(lambda: pool.run(conn, plan).report, fmt, watch, count)
    raise typer.Exit(report.status)
