"""What pgops' Alembic revisions (migrations/versions/) share: running SQL text, online or into an offline
script, and the settings of the run. Each revision keeps its own snapshot of the SQL it runs (sql/refresh/000N_*);
only these mechanics are shared, so a change here must keep every revision's behaviour."""

from __future__ import annotations

from alembic import context, op

from pgops.config import Settings, load_settings


def run_sql(script: str) -> None:
    """Run SQL text as it is (no bind-parameter parsing of `%` or `:`): online through psycopg itself, offline
    written verbatim into the script."""
    if context.is_offline_mode():
        op.get_context().impl.static_output(script.strip() + "\n")
    else:
        op.get_bind().connection.driver_connection.execute(script)


def settings() -> Settings:
    """The settings `pgops migrate` handed over, else those of the environment and `-x dsn=...`."""
    return context.config.attributes.get("settings") or load_settings(
        dsn=context.get_x_argument(as_dictionary=True).get("dsn")
    )


def lock_timeout() -> None:
    """Statements that lock the application's tables give up after [refresh] lock_timeout rather than queue
    every writer of a table behind a lock that waits for a long transaction."""
    ms = int(settings().refresh.lock_timeout.total_seconds() * 1000)
    run_sql(f"SELECT set_config('lock_timeout', '{ms}ms', true);")
