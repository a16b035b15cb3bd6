"""Refresh processing: one loop over a view's attempts, the procedure `pgops.process_view()` that pg_cron's
`pgops.process_due()`, the daemon and `pgops refresh now` all call. Functions only; the downgrade puts back
0001's `process_due()`. The pg_cron job is no longer scheduled by a migration: `pgops refresh schedule` (which
`pgops migrate` runs) does that.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from pgops.migration_steps import run_sql
from pgops.resources import read_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql(read_sql("refresh/0004_upgrade.sql"))


def downgrade() -> None:
    run_sql(read_sql("refresh/0004_downgrade.sql"))
