"""Refresh write path: each view's pending flag is the body of its own trigger function, so that while a refresh
is pending a writer runs an empty trigger and looks nothing up. Converts an existing install in place (each
view's flag keeps its state) and back.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from pgops.migration_steps import lock_timeout, run_sql
from pgops.resources import read_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    lock_timeout()
    run_sql(read_sql("refresh/0002_upgrade.sql"))


def downgrade() -> None:
    lock_timeout()
    run_sql(read_sql("refresh/0002_downgrade.sql"))
