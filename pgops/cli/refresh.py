"""`pgops refresh watch|unwatch|status|now|schedule`: register materialized views and look after their refreshes."""

from __future__ import annotations

import dataclasses

import typer

from pgops import db, output
from pgops.cli.app import FormatOption, app, duration_option, state
from pgops.config import pg_cron_schedule
from pgops.errors import EXIT_ERROR, EXIT_WARNING, PgopsError
from pgops.refresh import cron, names, process, queue
from pgops.refresh import watch as registration

refresh_app = typer.Typer(
    help="Debounced materialized-view refresh: watch views, see their state, refresh at once.",
    no_args_is_help=True,
)
app.add_typer(refresh_app, name="refresh")


def _when(view: queue.WatchedView, moment) -> str:
    return f"{output.human_duration(view.now - moment)} ago" if moment else ""


def _state(view: queue.WatchedView) -> str:
    if view.populated is None:
        return "missing"
    if view.failure_count:
        return "failing"
    return "stale" if view.stale_since else "fresh"


@refresh_app.command("watch")
def watch_command(
    ctx: typer.Context,
    view: str = typer.Argument(..., metavar="SCHEMA.VIEW", help="The materialized view to keep fresh."),
    debounce: str | None = typer.Option(None, "--debounce", help="Quiet time after the last write [refresh.debounce]."),
    max_wait: str | None = typer.Option(
        None, "--max-wait", help="Longest a view stays stale under continuous writes [refresh.max_wait]."
    ),
    concurrently: bool = typer.Option(
        True, "--concurrently/--no-concurrently", help="REFRESH CONCURRENTLY (needs a unique index) or plain."
    ),
    fmt: output.Format = FormatOption,
) -> None:
    """Install statement triggers on every table VIEW reads (through views and materialized views)."""
    name = names.parse_view_name(view)  # a bad name is refused before connecting
    st = state(ctx)
    overrides = {
        "debounce": duration_option(debounce, "--debounce"),
        "max_wait": duration_option(max_wait, "--max-wait"),
    }
    settings = dataclasses.replace(st.settings.refresh, **{k: v for k, v in overrides.items() if v is not None})
    with db.connect(st.dsn, st.settings.database) as conn:
        watched = registration.watch(conn, name, settings, concurrently=concurrently)
    if fmt is output.Format.json:
        output.print_json(watched)
        return
    mode = "concurrently" if watched.refresh_concurrently else "plain"
    output.console.print(
        f"watching {watched.name}: debounce {output.human_duration(watched.debounce)}, max wait "
        f"{output.human_duration(watched.max_wait)}, {mode} refreshes; triggers on {', '.join(watched.base_tables)}",
        highlight=False,
        soft_wrap=True,
    )


@refresh_app.command()
def unwatch(
    ctx: typer.Context,
    view: str = typer.Argument(..., metavar="SCHEMA.VIEW", help="The materialized view to stop watching."),
) -> None:
    """Stop watching VIEW and remove its triggers (exit 1 when it was not watched)."""
    name = names.parse_view_name(view)  # a bad name is refused before connecting
    st = state(ctx)
    with db.connect(st.dsn, st.settings.database) as conn:
        removed = registration.unwatch(conn, name, st.settings.refresh)
    message = f"{name}: " + ("no longer watched" if removed else "was not watched")
    output.err_console.print(message, markup=False, highlight=False)
    if not removed:
        raise typer.Exit(EXIT_WARNING)


@refresh_app.command()
def status(ctx: typer.Context, fmt: output.Format = FormatOption) -> None:
    """Every watched view: stale since, last refresh, duration, error. Exit 2 when a refresh fails, 1 when a
    view has been stale longer than its max wait (plus the processing interval)."""
    st = state(ctx)
    with db.connect(st.dsn, st.settings.database) as conn:
        views = queue.watched_views(conn)
    grace = st.settings.refresh.interval
    if fmt is output.Format.json:
        output.print_json(
            [
                {
                    "view": v.name,
                    **vars(v),
                    "stale_for": v.stale_for,
                    "overdue": queue.is_overdue(v, grace),
                    "plain_is_cheaper": queue.plain_is_cheaper(v),
                }
                for v in views
            ]
        )
    else:
        rows = [
            (
                v.name,
                _state(v),
                output.human_duration(v.stale_for),
                _when(v, v.last_refresh_finished_at),
                output.human_duration(v.last_refresh_duration),
                "concurrently" if v.refresh_concurrently else "plain",
                f"{output.human_duration(v.debounce)} / {output.human_duration(v.max_wait)}",
                (f"failed {v.failure_count}x: {v.last_error}" if v.failure_count else "")
                + ("plain refresh is cheaper: --no-concurrently" if queue.plain_is_cheaper(v) else ""),
            )
            for v in views
        ]
        columns = ["view", "state", "stale for", "last refresh", "took", "mode", "debounce / max", "note"]
        output.console.print(output.table("watched materialized views", columns, rows, keep=("view", "state")))
    raise typer.Exit(queue.status_exit_code(views, grace))


@refresh_app.command()
def now(
    ctx: typer.Context,
    view: str = typer.Argument(..., metavar="SCHEMA.VIEW", help="A watched materialized view."),
    plain: bool = typer.Option(
        False,
        "--plain",
        help="A plain refresh (blocks readers) even if it is watched concurrently: status then "
        "compares both durations.",
    ),
    fmt: output.Format = FormatOption,
) -> None:
    """Refresh a watched view at once (exit 1 when another refresh of it is still running, 3 when it fails)."""
    name = names.parse_view_name(view)  # a bad name is refused before connecting
    st = state(ctx)
    with db.connect(st.dsn, st.settings.database) as conn:
        outcome = process.refresh_now(conn, name, st.settings.refresh, plain=plain)
    if fmt is output.Format.json:
        output.print_json(outcome)
    elif outcome.outcome == process.REFRESHED:
        mode = "concurrently" if outcome.concurrent else "plain"
        output.console.print(
            f"refreshed {outcome.view} ({mode}) in {output.human_duration(outcome.duration)}", highlight=False
        )
    if outcome.outcome == process.BUSY:
        why = outcome.error or "another refresh is still running"  # or the tables' lock was not free in time
        output.err_console.print(f"{outcome.view}: {why}", markup=False, highlight=False)
        raise typer.Exit(EXIT_WARNING)
    if outcome.outcome == process.FAILED:
        output.err_console.print(
            f"pgops: error: refresh of {outcome.view} failed: {outcome.error}", markup=False, highlight=False
        )
        raise typer.Exit(EXIT_ERROR)


def every_schedule(text: str) -> str:
    """`--every` as a pg_cron schedule: 1-59 seconds, minutes that divide an hour, hours that divide a day."""
    every = duration_option(text, "--every")
    seconds = every.total_seconds()
    if seconds == int(seconds) and 1 <= seconds <= 59:
        return f"{int(seconds)} seconds"
    minutes, hours = seconds / 60, seconds / 3600
    if minutes == int(minutes) and 1 <= minutes <= 59 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{int(minutes)} * * * *"
    if hours == int(hours) and 1 <= hours <= 24 and 24 % hours == 0:
        return "0 * * * *" if hours == 1 else "0 0 * * *" if hours == 24 else f"0 */{int(hours)} * * *"
    raise PgopsError(
        f"--every: pg_cron can't run every {text}: use 1-59 seconds, minutes that divide an "
        "hour, hours that divide a day, or --cron"
    )


def schedule_job(st, when: str | None = None) -> cron.CronResult:
    """pgops' pg_cron job on `when` (default [refresh] cron_schedule); `pgops migrate` runs this too."""
    with db.connect(st.dsn, st.settings.database) as conn:
        return cron.schedule(conn, st.settings.refresh, when)


@refresh_app.command()
def schedule(
    ctx: typer.Context,
    every: str | None = typer.Option(None, "--every", help="Run every DURATION (30s, 5m, 1h)."),
    crontab: str | None = typer.Option(None, "--cron", help="A pg_cron schedule ('*/5 * * * *', '30 seconds')."),
    off: bool = typer.Option(False, "--off", help="Remove pgops' pg_cron job (the daemon then refreshes)."),
) -> None:
    """Set pgops' pg_cron job that processes due refreshes (default: [refresh] cron_schedule), or remove it.
    One error line, naming what is missing, when pg_cron can't be used here."""
    if [every is not None, crontab is not None, off].count(True) > 1:
        raise PgopsError("refresh schedule: give one of --every, --cron or --off")
    when = None
    if every is not None:
        when = every_schedule(every)
    elif crontab is not None:
        if not crontab.strip():
            raise PgopsError("--cron: empty schedule: use --off to remove the job")
        try:
            pg_cron_schedule(crontab)
        except ValueError as exc:
            raise PgopsError(f"--cron: {exc}") from None
        when = crontab.strip()
    st = state(ctx)
    if off:
        with db.connect(st.dsn, st.settings.database) as conn:
            result = cron.unschedule(conn)
    else:
        result = schedule_job(st, when)
    if not result.usable:
        raise PgopsError(result.message)
    output.err_console.print(result.message, markup=False, highlight=False)
