"""Refresh write path: while a view's refresh is pending, its triggers are also disabled (where the role owns the
table), so writers call no trigger function at all. Adds no state of its own: the downgrade enables every pgops
trigger again and puts back 0002's functions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from alembic import context, op

from pgops.config import Settings, load_settings
from pgops.resources import read_sql

revision = "0003"
down_revision = "0002"
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


def upgrade() -> None:
    _run(read_sql("refresh/0003_upgrade.sql"))  # functions only: no lock on the application's tables


def downgrade() -> None:
    # enabling a disabled trigger locks its table: give up after [refresh] lock_timeout rather than wait longer
    ms = int(_settings().refresh.lock_timeout.total_seconds() * 1000)
    _run(f"SELECT set_config('lock_timeout', '{ms}ms', true);")
    _run(read_sql("refresh/0003_downgrade.sql"))
