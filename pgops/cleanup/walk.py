"""How the batches go through one relation: in index order of the condition column, each resuming at the last
key seen (few matching rows), or over consecutive block ranges (many matching rows, or no index); see
`choose_walk`. A ctid is only unique within one relation, so a partitioned table is walked one leaf at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import NamedTuple

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from pgops.cleanup.count import estimate
from pgops.cleanup.policy import LeafInfo
from pgops.cleanup.statements import BatchStatements, batch_statements, explain
from pgops.config import CleanupPolicy, CleanupSettings
from pgops.resources import read_sql

# Rows: however fast the server, a batch never holds more row locks than this, and an application write to
# one of them waits only that long for the batch to commit: 2 000 rows take about 1 ms on the benchmark's
# machine.
MAX_BATCH_SIZE = 2_000
# How long a heap batch's single-pass DELETE may wait on a lock before the batch is redone the slow, never
# waiting way (see statements.BatchStatements): a row locked in the instant between being read and being deleted.
FRESH_DELETE_LOCK_TIMEOUT = timedelta(milliseconds=20)
HEAP_WALK_FRACTION = 0.10  # from this share of matching rows on, one sequential pass beats index order


class WalkKind(StrEnum):
    """How a relation's batches go through it (see `choose_walk`)."""

    INDEX = "index"
    HEAP = "heap"


def choose_walk(*, indexed: bool, matching: float, total: float, tid_range_scan: bool) -> WalkKind:
    """`index`: batches in index order of the condition column, touching only matching rows, at the price of
    random heap access; `heap`: consecutive block ranges (TID Range Scan), one sequential pass over the
    table, cheaper per row once many rows match, and the only sane way without an index."""
    if not tid_range_scan:  # PostgreSQL before 14
        return WalkKind.INDEX
    if not indexed:
        return WalkKind.HEAP
    return WalkKind.HEAP if total > 0 and matching / total >= HEAP_WALK_FRACTION else WalkKind.INDEX


def run_together(conn: psycopg.Connection, statements: list[sql.Composed]) -> psycopg.Cursor:
    """Send `statements` as one query string: one round trip and one implicit transaction (all or nothing).
    The cursor is on the first statement's result; `nextset()` moves on."""
    return conn.execute(sql.SQL("; ").join(statements))


class Batch(NamedTuple):
    selected: int  # rows the batch locked or deleted (rows others hold are skipped, not counted)
    deleted: int
    redone: bool = False  # see result.BatchResult.redone


@dataclass
class Walk:
    """Where the batches of one relation are: the next key (index walk) or the next block (heap walk)."""

    kind: WalkKind
    statements: BatchStatements
    after: object = None
    next_block: int = 0
    end_block: int = 0
    rows_per_block: float = 1.0
    tuples_per_block: int = 0  # at most, on a page of this block size (MaxHeapTuplesPerPage); set by start_walk
    fresh_lock_timeout: str = ""  # FRESH_DELETE_LOCK_TIMEOUT, or lock_timeout if shorter; set by start_walk
    rows_walked: float = 0.0  # heap walk: rows' worth of blocks the batches covered so far
    rows_selected: int = 0  # heap walk: rows they deleted or locked
    done: bool = False

    def _heap_range(self, size: int) -> tuple[int, int]:
        return self.next_block, min(self.next_block + max(1, int(size / self.rows_per_block)), self.end_block)

    def largest(self) -> int:
        """The largest batch size, in this walk's units, that keeps a batch's row locks under MAX_BATCH_SIZE: a
        heap batch's size counts every row of its block range, of which only the matching ones are locked."""
        if self.kind is not WalkKind.HEAP or not self.rows_selected:
            return MAX_BATCH_SIZE
        return int(MAX_BATCH_SIZE * min(100.0, self.rows_walked / self.rows_selected))

    def explain(self, conn: psycopg.Connection, size: int) -> str:
        if self.kind is WalkKind.HEAP:
            low, high = self._heap_range(size)
            statements = [self.statements.fresh_delete(low, high), self.statements.held_delete(low, high)]
            plans = [conn.execute(explain(s)).fetchall() for s in statements]
        else:
            plans = [conn.execute(explain(self.statements.index_first), {"limit": size}).fetchall()]
        return "\n".join(row[0] for plan in plans for row in plan)

    def run_batch(self, conn: psycopg.Connection, size: int, remaining: int | None) -> Batch:
        """Run one batch (one transaction; two when a heap batch is redone) and move on."""
        if self.kind is WalkKind.HEAP:
            low, high = self._heap_range(size)
            # A DELETE has no LIMIT: a batch that could go past max_rows takes the two-pass statements.
            if remaining is not None and remaining < (high - low) * self.tuples_per_block:
                batch = self._two_pass(conn, low, high, remaining)
            else:
                try:
                    batch = self._single_pass(conn, low, high)
                except pgerrors.LockNotAvailable:
                    batch = self._two_pass(conn, low, high, None)._replace(redone=True)
            self.rows_walked += (high - low) * self.rows_per_block
            self.rows_selected += batch.selected
            self.next_block = high
            self.done = high >= self.end_block
            return batch
        limit = size if remaining is None else min(size, remaining)
        statement = self.statements.index_first if self.after is None else self.statements.index_resumed
        row = conn.execute(statement, {"limit": limit, "after": self.after}).fetchone()
        assert row is not None
        selected, last_key, deleted = row
        self.done = selected < limit  # nothing left here that others do not hold locked
        self.after = last_key
        return Batch(selected, deleted)

    def _single_pass(self, conn: psycopg.Connection, low: int, high: int) -> Batch:
        cursor = run_together(conn, self.statements.single_pass(low, high, self.fresh_lock_timeout))
        cursor.nextset()
        fresh = cursor.rowcount
        cursor.nextset()
        row = cursor.fetchone()
        if not (row and row[0]):
            return Batch(fresh, fresh)
        # it passed over rows with an xmax: in a transaction of its own, take those no one holds now
        row = conn.execute(self.statements.held_delete(low, high)).fetchone()
        assert row is not None
        held, deleted = row
        return Batch(fresh + held, fresh + deleted)

    def _two_pass(self, conn: psycopg.Connection, low: int, high: int, limit: int | None) -> Batch:
        cursor = run_together(conn, self.statements.two_pass(low, high, limit))
        row = cursor.fetchone()
        assert row is not None
        cursor.nextset()
        return Batch(row[0], cursor.rowcount)


def start_walk(conn: psycopg.Connection, leaf: LeafInfo, policy: CleanupPolicy, settings: CleanupSettings) -> Walk:
    statements = batch_statements(leaf.relation, policy)
    row = conn.execute(read_sql("cleanup/relation_blocks.sql"), {"relation": leaf.relation.oid}).fetchone()
    assert row is not None
    blocks, block_size = int(row[0]), int(row[1])
    kind = choose_walk(
        indexed=leaf.indexed,
        matching=estimate(conn, leaf.relation, policy) if leaf.indexed else 0.0,
        total=leaf.estimated_rows,
        tid_range_scan=conn.info.server_version >= 140000,
    )
    # Never analyzed (no reltuples): assume rows of about 80 bytes until the adaptive size corrects it.
    rows_per_block = max(1.0, leaf.estimated_rows / blocks) if blocks and leaf.estimated_rows else 100.0
    fresh_lock_timeout = FRESH_DELETE_LOCK_TIMEOUT
    if timedelta(0) < settings.lock_timeout < fresh_lock_timeout:
        fresh_lock_timeout = settings.lock_timeout
    return Walk(
        kind,
        statements,
        end_block=blocks,
        rows_per_block=rows_per_block,
        tuples_per_block=(block_size - 24) // 28,  # page header; tuple header and line pointer
        fresh_lock_timeout=f"{max(1, int(fresh_lock_timeout.total_seconds() * 1000))}ms",
        done=kind is WalkKind.HEAP and not blocks,
    )
