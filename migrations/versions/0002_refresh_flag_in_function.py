"""Refresh write path: each view's pending flag is the body of its own trigger function, so that while a refresh
is pending a writer runs an empty trigger and looks nothing up. Converts an existing install in place (each
view's flag keeps its state) and back.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from alembic import context, op

from pgops.config import Settings, load_settings
from pgops.resources import read_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _settings() -> Settings:
    config = context.config
    return config.attributes.get("settings") or load_settings(dsn=context.get_x_argument(as_dictionary=True).get("dsn"))


def _run(script: str) -> None:
    """SQL text as it is: online through psycopg itself, offline written verbatim into the script."""
    if context.is_offline_mode():
        op.get_context().impl.static_output(script.strip() + "\n")
    else:
        op.get_bind().connection.driver_connection.execute(script)


def _lock_timeout() -> None:
    """Both ways re-create triggers on the application's tables: give up after [refresh] lock_timeout rather than
    queue every writer of a table behind a lock that waits for a long transaction."""
    ms = int(_settings().refresh.lock_timeout.total_seconds() * 1000)
    _run(f"SELECT set_config('lock_timeout', '{ms}ms', true);")


def upgrade() -> None:
    _lock_timeout()
    _run(read_sql("refresh/0002_upgrade.sql"))


def downgrade() -> None:
    _lock_timeout()
    _run(read_sql("refresh/0002_downgrade.sql"))
