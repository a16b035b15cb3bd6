"""`pgops migrate`: install or remove pgops' objects with the same Alembic migrations as `alembic upgrade`."""

from __future__ import annotations

import typer

from pgops import migrate as migrations
from pgops.cli.app import app, state
from pgops.cli.refresh import schedule_job
from pgops.output import err_console


@app.command()
def migrate(
    ctx: typer.Context,
    revision: str = typer.Option("head", "--revision", help="Target revision for an upgrade."),
    sql: bool = typer.Option(
        False, "--sql", help="Print the SQL script for review instead of running it (a downgrade starts at head)."
    ),
    downgrade: str | None = typer.Option(
        None, "--downgrade", metavar="REVISION", help="Downgrade to REVISION instead ('base' removes pgops)."
    ),
) -> None:
    """Install pgops' schema and objects and schedule the pg_cron job (`refresh schedule`), or print the
    script, or downgrade."""
    st = state(ctx)
    if sql:
        if downgrade is not None:
            typer.echo(migrations.downgrade_sql(st.settings, downgrade), nl=False)
        else:
            typer.echo(migrations.upgrade_sql(st.settings, revision), nl=False)
        return
    before = migrations.current_revision(st.dsn, st.settings)
    if downgrade is not None:
        migrations.downgrade(st.dsn, st.settings, downgrade)
    else:
        migrations.upgrade(st.dsn, st.settings, revision)
    after = migrations.current_revision(st.dsn, st.settings)
    err_console.print(f"pgops schema: {before or 'not installed'} → {after or 'not installed'}", highlight=False)
    if downgrade is None and after is not None and (before is None or before < "0004"):
        # a new install, or one from before `refresh schedule` (0004): later runs keep the schedule it was given
        result = schedule_job(st)  # a missing pg_cron is no failure here: the daemon refreshes then
        err_console.print(("" if result.scheduled else "warning: ") + result.message, markup=False, highlight=False)
