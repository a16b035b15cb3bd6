"""How many rows match a policy: the planner's estimate, an exact count where that is cheap, what is left after a
run, and the leaf partitions that have expired whole."""

from __future__ import annotations

import json

import psycopg
from psycopg import errors as pgerrors

from pgops.cleanup import statements
from pgops.cleanup.policy import Checked, Relation
from pgops.config import CleanupPolicy
from pgops.resources import read_sql

EXACT_COUNT_LIMIT = 1_000_000  # a dry run counts rows up to this table size, above it asks the planner
COUNT_LEFT_LIMIT = 100_000  # rows_left is counted after a run that deleted up to this many rows (see rows_left)


def estimate(conn: psycopg.Connection, relation: Relation, policy: CleanupPolicy) -> int:
    row = conn.execute(statements.estimate(relation, policy)).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return int(plan[0]["Plan"]["Plan Rows"])


def _counted(conn: psycopg.Connection, checked: Checked, *, limit: int | None, quick: bool) -> int | None:
    """Rows matching now, counted (up to `limit`); None when counting hit the statement timeout: the session's,
    or one second when `quick`."""
    query = statements.count(checked.table.relation, checked.policy, limit)
    try:
        if not quick:
            row = conn.execute(query).fetchone()
        else:
            with conn.transaction():
                conn.execute(read_sql("cleanup/count_timeout.sql"))
                row = conn.execute(query).fetchone()
    except pgerrors.QueryCanceled:
        return None
    assert row is not None
    return row[0]


def count(conn: psycopg.Connection, checked: Checked) -> tuple[int, bool]:
    """Rows matching now, and whether counted: counted on a table up to EXACT_COUNT_LIMIT rows (unless counting
    times out), else the planner's estimate."""
    if sum(leaf.estimated_rows for leaf in checked.table.leaves) <= EXACT_COUNT_LIMIT:
        counted = _counted(conn, checked, limit=None, quick=False)
        if counted is not None:
            return counted, True
    return estimate(conn, checked.table.relation, checked.policy), False


def rows_left(conn: psycopg.Connection, checked: Checked, matching_before: int, deleted: int) -> int:
    """Rows still matching after a run: counted through the index after a small run, when that takes under a
    second; else the planner's estimate from before the run less what the run deleted (statistics are stale
    until ANALYZE). Right after a big cleanup the index still holds every deleted row's entry until vacuum,
    and counting would visit them all (0.3 s after deleting 2 M rows, measured here)."""
    if deleted <= COUNT_LEFT_LIMIT and all(leaf.indexed for leaf in checked.table.leaves):
        counted = _counted(conn, checked, limit=EXACT_COUNT_LIMIT, quick=True)
        if counted is not None and counted < EXACT_COUNT_LIMIT:
            return counted
    return max(0, matching_before - deleted)


def expired_partitions(conn: psycopg.Connection, checked: Checked) -> list[str]:
    """For each leaf partition whose rows have all expired (checked on indexed leaves only, where it is two
    index probes), the statements that drop it whole instead of deleting it row by row."""
    if not checked.table.partitioned:
        return []
    advice = []
    for leaf in checked.table.leaves:
        if not leaf.indexed or leaf.relation.parent is None:
            continue
        row = conn.execute(statements.all_expired(leaf.relation, checked.policy)).fetchone()
        if row and row[0]:
            advice.append(statements.detach_and_drop(leaf.relation.parent, leaf.relation).as_string(conn))
    return advice
