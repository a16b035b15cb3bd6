"""Materialized-view refresh: queue, stale marks, trigger function, registration and processing.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import logging

from alembic import context, op

from pgops.migration_steps import run_sql
from pgops.refresh import cron
from pgops.resources import read_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger("pgops.migrate")


def upgrade() -> None:
    run_sql(read_sql("refresh/install.sql"))
    # the pg_cron job is `pgops refresh schedule`'s (which `pgops migrate` runs), so it can be changed later
    if context.is_offline_mode():
        run_sql("-- then `pgops refresh schedule` schedules the pg_cron job (or run `pgops daemon`)")


def downgrade() -> None:
    if not context.is_offline_mode():
        result = cron.unschedule(op.get_bind().connection.driver_connection)
        log.info("%s", result.message)
    else:
        run_sql(cron.offline_unschedule_sql())
    run_sql(read_sql("refresh/uninstall.sql"))
