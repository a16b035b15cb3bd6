"""The daemon's jobs: small registered objects (name, schedule, function of a context) calling the library.

The daemon knows nothing about what a job does: refresh, cleanup, pool sampling and index advice are built here
from the settings, and `[daemon] plugins = ["module:function"]` adds site-specific jobs the same way (the tests
register theirs through it). Job modules are imported inside the job functions, so a job whose module is broken
or missing fails its runs (and says so) while the daemon and the other jobs keep going.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import multiprocessing
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg

from pgops.config import CleanupPolicy, Settings
from pgops.errors import ConnectError, PgopsError, first_line
from pgops.web.history import HISTORY  # what the pages show; a small module, no import of the jobs' own

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Every:
    """Run every `interval`, at multiples of it since a fixed epoch, so all daemons share the same slots."""

    interval: timedelta


@dataclass(frozen=True)
class Cron:
    """Run on a five-field crontab expression, in UTC."""

    expression: str


@dataclass
class JobContext:
    """What a job run gets: the settings, a pooled connection (holding the run lock), and a stop signal."""

    job: str
    dsn: str
    settings: Settings
    conn: psycopg.Connection
    should_stop: Callable[[], bool]


@dataclass(frozen=True)
class Job:
    """`run(context)` does one run and returns a one-line summary for the log and STATUS.

    `exclusive` jobs run in one daemon at a time and once per schedule period across daemons. A job that only
    feeds this daemon's own /metrics (pool sampling) is not exclusive: every daemon should serve fresh figures.
    `primary_only` jobs write: on a read-only server (a standby) they pause until the URL leads to a primary.
    """

    name: str
    schedule: Every | Cron
    run: Callable[[JobContext], str | None]
    exclusive: bool = True
    primary_only: bool = False


# -- the built-in jobs ------------------------------------------------------------------------------------------


def _refresh(ctx: JobContext) -> str:
    """Due materialized views; each refresh sets its own statement and lock timeouts in its transaction."""
    from pgops.refresh.process import process_due

    outcomes = process_due(ctx.conn, ctx.settings.refresh, should_stop=ctx.should_stop)
    HISTORY.record_refresh(outcomes)
    counts = Counter(outcome.outcome for outcome in outcomes)
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "nothing due"


def _cleanup(name: str, policy: CleanupPolicy) -> Callable[[JobContext], str]:
    def run(ctx: JobContext) -> str:
        from pgops import cleanup

        options = cleanup.RunOptions(should_stop=ctx.should_stop)
        try:
            # this job's one policy, on this job's target
            plan = cleanup.prepare(ctx.conn, ctx.settings)
            plan = dataclasses.replace(plan, dsn=ctx.dsn, policies={name: policy}, options=options)
            result = cleanup.run(ctx.conn, plan).results[0]
        except Exception as exc:
            HISTORY.record_cleanup(name, None, first_line(exc))
            raise
        HISTORY.record_cleanup(name, result)
        reason = f" ({result.reason})" if result.reason else ""
        return f"{result.status}: {result.rows_deleted} rows deleted in {result.batches} batches{reason}"

    return run


class _PoolSampler:
    """Pool figures for this daemon's /metrics, a log line for each limit or leak that got worse since the last
    sample, and idle counts kept across samples to spot an application whose pool keeps growing."""

    def __init__(self) -> None:
        self.previous: Any = None
        self.idle_growth: Any = None

    def __call__(self, ctx: JobContext) -> str:
        from pgops import pool_report
        from pgops.pool_report.analyze import IdleGrowth, crossings
        from pgops.pool_report.export import export_idle_growth, export_metrics

        settings = ctx.settings.pool_report
        if self.idle_growth is None:
            self.idle_growth = IdleGrowth(settings.idle_growth_samples)
        # its own session: the pooled ones carry pgops' idle_in_transaction timeout, which the sample would read
        with pool_report.open_connection(ctx.dsn, ctx.settings) as conn:
            # the standbys' usage is the CLI's: the sampler's gauges are this server's connections
            plan = dataclasses.replace(pool_report.prepare(conn, ctx.settings), standbys=False)
            result = pool_report.run(conn, plan)
        sample, report = result.sample, result.report
        for line in crossings(self.previous, report):
            log.warning("pool report: %s", line, extra={"job": ctx.job})
        self.previous = report
        HISTORY.record_pool(report)
        export_metrics(report, settings.top_applications)
        export_idle_growth(self.idle_growth.feed(sample), settings.top_applications)
        return f"pool {report.status_name}: {report.total} connections"


def _advise(ctx: JobContext) -> str:
    """The index advice, computed in a child process: the advisor's SQL parser and its workload analysis take
    about as much memory as the whole idle daemon, and a process that ends gives all of it back."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no copy of the daemon's threads or locks
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_advice_in_child, args=(ctx.dsn, ctx.settings, sender), name="pgops-advisor")
    child.start()
    sender.close()
    try:
        while not receiver.poll(0.2):
            if ctx.should_stop():
                return "stopped before the advice was ready"
            if not child.is_alive() and not receiver.poll():
                raise PgopsError(f"the advisor's process ended without an answer (exit code {child.exitcode})")
        answer = receiver.recv()
    finally:
        child.terminate()  # it only reads, and hypopg's hypothetical indexes live and die with its session
        child.join(5)
        receiver.close()
    if answer[0] == "transient":
        raise ConnectError(answer[1], transient=True)  # retried by the runner, like any lost connection
    if answer[0] == "error":
        raise PgopsError(answer[1])
    found, script = answer[1], answer[2]
    HISTORY.record_advice(found, script)
    output = ctx.settings.advisor.output
    if output is None:
        log.info("index advice:\n%s", script)
        return f"{found}, script logged"
    _write_atomically(output, script)
    return f"{found}, script written to {output}"


def _advice_in_child(dsn: str, settings: Settings, sender: Connection) -> None:
    from pgops.advisor.run import advise
    from pgops.advisor.script import render_sql
    from pgops.db import is_transient
    from pgops.logs import setup_logging

    setup_logging()
    try:
        advice = advise(dsn, settings)
        sender.send(("ok", f"{len(advice.recommendations)} index(es) recommended", render_sql(advice)))
    except Exception as exc:
        kind = "transient" if is_transient(exc) else "error"
        message = first_line(exc) if isinstance(exc, PgopsError) else f"{type(exc).__name__}: {first_line(exc)}"
        sender.send((kind, message))
    finally:
        sender.close()


def _write_atomically(path: Path, text: str) -> None:
    """Readers of the advice file never see half a script."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


BUILTIN = ("refresh", "cleanup", "pool-sample", "advisor")


def default_jobs(settings: Settings) -> list[Job]:
    """The built-in jobs `[daemon] jobs` names: refresh, one per cleanup policy, pool sampling, index advice."""
    unknown = sorted(set(settings.daemon.jobs) - set(BUILTIN))
    if unknown:
        raise PgopsError(f"daemon.jobs: unknown job {unknown[0]!r} (known: {', '.join(BUILTIN)})")
    wanted = set(settings.daemon.jobs)
    jobs: list[Job] = []
    if "refresh" in wanted:
        jobs.append(Job("refresh", Every(settings.refresh.interval), _refresh, primary_only=True))
    if "cleanup" in wanted:
        jobs += [
            Job(f"cleanup:{name}", Cron(policy.schedule), _cleanup(name, policy), primary_only=True)
            for name, policy in _policies(settings)
        ]
    if "pool-sample" in wanted:
        jobs.append(Job("pool-sample", Every(settings.pool_report.interval), _PoolSampler(), exclusive=False))
    if "advisor" in wanted:
        jobs.append(Job("advisor", Every(settings.advisor.interval), _advise))
    return jobs


def _policies(settings: Settings) -> list[tuple[str, CleanupPolicy]]:
    """The configured cleanup policies plus the enabled ready-made ones, as the cleanup module resolves them."""
    from pgops.cleanup.policy import resolve_policies

    return sorted(resolve_policies(settings).items())


def plugin_jobs(settings: Settings) -> list[Job]:
    """Jobs from `[daemon] plugins`: each entry names a function `(settings) -> list[Job]`."""
    jobs: list[Job] = []
    for entry in settings.daemon.plugins:
        module_name, _, function_name = entry.partition(":")
        if not module_name or not function_name:
            raise PgopsError(f"daemon.plugins: {entry!r} is not of the form module:function")
        try:
            factory = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as exc:
            raise PgopsError(f"daemon.plugins: can't load {entry!r}: {exc}") from None
        jobs += factory(settings)
    return jobs


def load_jobs(settings: Settings) -> list[Job]:
    """Every job the daemon schedules; names must be unique (they key the locks)."""
    jobs = default_jobs(settings) + plugin_jobs(settings)
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise PgopsError(f"two daemon jobs are named {job.name!r}: job names must be unique")
        seen.add(job.name)
    return jobs
