"""Materialized-view refresh: queue, stale marks, trigger function, registration and processing, pg_cron job.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import logging

from alembic import context, op

from pgops.config import Settings, load_settings
from pgops.refresh import cron
from pgops.resources import read_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger("pgops.migrate")


def _settings() -> Settings:
    config = context.config
    return config.attributes.get("settings") or load_settings(dsn=context.get_x_argument(as_dictionary=True).get("dsn"))


def _run(script: str) -> None:
    """Run SQL text as it is (no bind-parameter parsing of `%` or `:`): online through psycopg itself, offline
    written verbatim into the script."""
    if context.is_offline_mode():
        op.get_context().impl.static_output(script.strip() + "\n")
    else:
        op.get_bind().connection.driver_connection.execute(script)


def upgrade() -> None:
    _run(read_sql("refresh/install.sql"))
    settings = _settings().refresh
    if context.is_offline_mode():
        _run(cron.offline_schedule_sql(settings))
        return
    result = cron.schedule(op.get_bind().connection.driver_connection, settings)
    log.log(logging.INFO if result.scheduled else logging.WARNING, "%s", result.message)


def downgrade() -> None:
    if not context.is_offline_mode():
        result = cron.unschedule(op.get_bind().connection.driver_connection)
        log.info("%s", result.message)
    else:
        _run(cron.offline_unschedule_sql())
    _run(read_sql("refresh/uninstall.sql"))
