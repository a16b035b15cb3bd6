"""Refresh write path: while a view's refresh is pending, its triggers are also disabled (where the role owns the
table), so writers call no trigger function at all. Adds no state of its own: the downgrade enables every pgops
trigger again and puts back 0002's functions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from pgops.migration_steps import lock_timeout, run_sql
from pgops.resources import read_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql(read_sql("refresh/0003_upgrade.sql"))  # functions only: no lock on the application's tables


def downgrade() -> None:
    lock_timeout()  # enabling a disabled trigger locks its table
    run_sql(read_sql("refresh/0003_downgrade.sql"))
