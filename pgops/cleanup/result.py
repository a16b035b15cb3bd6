"""What a cleanup run reports: one `BatchResult` per batch as it goes, one `CleanupResult` per policy at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pgops.cleanup.walk import WalkKind


class Status(StrEnum):
    """How a policy's run ended."""

    DONE = "done"  # nothing left that it could take
    LIMIT = "limit"  # max_rows or max_runtime reached
    STOPPED = "stopped"  # should_stop said so
    SKIPPED = "skipped"  # table absent for an `if_exists` policy, or another run holds the policy
    DRY_RUN = "dry-run"


@dataclass(frozen=True)
class BatchResult:
    policy: str
    table: str  # the relation the batch deleted from (a leaf partition for a partitioned table)
    number: int
    walk: WalkKind
    selected: int  # rows the batch locked (locked-by-others rows are skipped, not counted)
    deleted: int
    seconds: float
    redone: bool = False  # heap walk: the single-pass DELETE met a lock and the batch was redone two-pass


@dataclass
class CleanupResult:
    policy: str
    table: str
    database: str
    status: Status
    reason: str | None = None
    dry_run: bool = False
    rows_deleted: int = 0
    batches: int = 0
    failed_batches: int = 0
    redone_batches: int = 0  # see BatchResult.redone
    seconds: float = 0.0
    rows_per_second: float = 0.0
    throttled_seconds: float = 0.0
    throttled: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    would_delete: int | None = None  # dry run: rows matching now
    counted: bool = False  # would_delete is an exact count, not the planner's estimate
    plan: str | None = None
    rows_left: int | None = None  # after the run: counted, or estimated (see count.rows_left)
    expired_partitions: list[str] = field(default_factory=list)  # the statements that would drop them whole
    walks: dict[str, WalkKind] = field(default_factory=dict)  # relation → its walk
