"""Ends sessions idle in a transaction, only when asked (`--terminate-idle-in-transaction-over`).

Privileges are checked on the whole list first, so pgops never ends some sessions and then stops on one it
may not touch; each session is then ended only if it is still the same session, still idle in a transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import psycopg

from pgops.errors import PgopsError
from pgops.pool_report.leaks import idle_in_transaction_over
from pgops.pool_report.sample import Backend, Sample
from pgops.resources import read_sql

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Termination:
    pid: int
    user: str | None
    application: str
    client: str | None
    terminated: bool  # False: the session left that state (or ended) between the sample and the call


def candidates(sample: Sample, threshold: timedelta) -> list[Backend]:
    """The sessions that `terminate` would end, after checking that pgops' role may end every one of them."""
    targets = idle_in_transaction_over(sample, threshold)
    me = sample.server
    if me.superuser:
        return targets
    of_superusers = sorted(b.pid for b in targets if b.user in sample.superusers)
    if of_superusers:
        raise PgopsError(
            f"role {me.current_user} can't end sessions of superusers (pids {of_superusers}): "
            "only a superuser can; nothing was terminated"
        )
    of_others = sorted(b.pid for b in targets if b.user != me.current_user)
    if of_others and not me.signals_backends:
        raise PgopsError(
            f"role {me.current_user} can't end other roles' sessions (pids {of_others}): "
            f"GRANT pg_signal_backend TO {me.current_user}; nothing was terminated"
        )
    return targets


def terminate(conn: psycopg.Connection, targets: list[Backend], threshold: timedelta) -> list[Termination]:
    """End each target with pg_terminate_backend if it is still the session the sample saw, still idle."""
    done = []
    for backend in targets:
        row = conn.execute(
            read_sql("pool_report/terminate.sql"),
            {"pid": backend.pid, "backend_start": backend.backend_start, "threshold": threshold},
        ).fetchone()
        terminated = bool(row and row[0])
        if terminated:  # an audit trail of what pgops ended
            log.warning(
                "terminated pid %d (%s/%s from %s), idle in a transaction over %s",
                backend.pid, backend.user, backend.application or "-", backend.client or "local", threshold,
                extra={"pid": backend.pid, "user": backend.user, "application": backend.application},
            )  # fmt: skip
        done.append(Termination(backend.pid, backend.user, backend.application, backend.client, terminated))
    return done
