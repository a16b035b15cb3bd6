"""Batched cleanup of expired rows: policies (`policy`), database health throttling (`health`), the statements
(`statements`, `sql/cleanup/`), the walk through a relation (`walk`), counts (`count`), the batch loop (`loop`),
results (`result`), and a run end to end (`runner`).

The job's contract (docs/design/jobs.md): `prepare(conn, settings) -> Plan`, `run(conn, plan, progress) -> Result`.
Each policy's run connects to the database holding its table (pg_cron's, for the ready-made ones) with cleanup's
own timeouts, so `conn` is only the server the plan was made for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import psycopg

from pgops.cleanup.policy import resolve_policies
from pgops.cleanup.result import BatchResult, CleanupResult, Status
from pgops.cleanup.runner import RunOptions, run_policy, validate_all
from pgops.config import CleanupPolicy, Settings
from pgops.errors import Level
from pgops.progress import QUIET, Progress


@dataclass(frozen=True)
class Plan:
    """The policies to run, in order, on the server at `dsn`; the CLI narrows them (names, a one-off policy, its
    overrides) by replacing the settings' policies before `prepare`."""

    dsn: str
    settings: Settings
    policies: dict[str, CleanupPolicy]
    options: RunOptions = field(default_factory=RunOptions)


@dataclass(frozen=True)
class Result:
    results: tuple[CleanupResult, ...]

    @property
    def outcome(self) -> Level:
        """Warning when a policy warned (a missing index, a whole partition expired) or stopped at its limits."""
        warned = any(r.warnings or r.expired_partitions or r.status == Status.LIMIT for r in self.results)
        return Level.WARNING if warned else Level.OK


def prepare(conn: psycopg.Connection, settings: Settings) -> Plan:
    """Every policy the settings give (configured and enabled ready-made ones), checked for shape."""
    return Plan(settings.dsn, settings, resolve_policies(settings))


def run(conn: psycopg.Connection, plan: Plan, progress: Progress = QUIET) -> Result:
    """Check every policy against its catalog before any of them deletes a row (one policy is checked by its own
    run), then run them one after the other, reporting each batch's deleted rows."""
    if len(plan.policies) > 1:
        validate_all(plan.dsn, plan.policies, plan.settings)
    results = []
    with progress.task("deleting expired rows") as advance:
        told = plan.options.on_batch

        def on_batch(batch: BatchResult) -> None:
            advance(batch.deleted, policy=batch.policy)
            if told is not None:
                told(batch)

        options = dataclasses.replace(plan.options, on_batch=on_batch)
        for name, policy in plan.policies.items():
            results.append(run_policy(plan.dsn, name, policy, plan.settings, options))
    return Result(tuple(results))
