"""The daemon's jobs: small registered objects (name, schedule, function of a context) calling the library.

The daemon knows nothing about what a job does: refresh, cleanup, pool sampling and index advice are built here
from the settings, and `[daemon] plugins = ["module:function"]` adds site-specific jobs the same way (the tests
register theirs through it). Job modules are imported inside the job functions, so a job whose module is broken
or missing fails its runs (and says so) while the daemon and the other jobs keep going.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from pgops.config import Settings
from pgops.errors import PgopsError

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

    @contextlib.contextmanager
    def session(self, **timeouts: timedelta) -> Iterator[psycopg.Connection]:
        """The run's connection with other session limits (e.g. a refresh's long statement_timeout), reset after.

        RESET returns to the value the pool's connections were opened with, so the pool stays clean.
        """
        for name, value in timeouts.items():
            self.conn.execute("SELECT set_config(%s, %s, false)", (name, f"{int(value.total_seconds() * 1000)}ms"))
        try:
            yield self.conn
        finally:
            if not self.conn.broken:
                for name in timeouts:
                    self.conn.execute(sql.SQL("RESET {}").format(sql.Identifier(name)))


@dataclass(frozen=True)
class Job:
    """`run(context)` does one run and returns a one-line summary for the log and STATUS.

    `exclusive` jobs run in one daemon at a time and once per schedule period across daemons. A job that only
    feeds this daemon's own /metrics (pool sampling) is not exclusive: every daemon should serve fresh figures.
    """

    name: str
    schedule: Every | Cron
    run: Callable[[JobContext], str | None]
    exclusive: bool = True


# -- the built-in jobs ------------------------------------------------------------------------------------------


def _refresh(ctx: JobContext) -> str:
    from pgops.refresh.process import process_due

    refresh = ctx.settings.refresh
    with ctx.session(statement_timeout=refresh.statement_timeout, lock_timeout=refresh.lock_timeout) as conn:
        outcomes = process_due(conn, refresh, should_stop=ctx.should_stop)
    return f"{len(outcomes)} view(s) refreshed" if outcomes else "nothing due"


def _cleanup(name: str) -> Callable[[JobContext], str]:
    def run(ctx: JobContext) -> str:
        from pgops.cleanup.policy import resolve_policies
        from pgops.cleanup.runner import run_policy

        policy = resolve_policies(ctx.settings)[name]
        result = run_policy(ctx.dsn, name, policy, ctx.settings, should_stop=ctx.should_stop)
        return str(result)

    return run


def _pool_sample(ctx: JobContext) -> str:
    from pgops.pool_report.analyze import analyze
    from pgops.pool_report.export import export_metrics
    from pgops.pool_report.sample import take_sample

    report = analyze(take_sample(ctx.conn), ctx.settings.pool_report)
    export_metrics(report, ctx.settings.pool_report.top_applications)
    return f"pool {report.status}"


def _advise(ctx: JobContext) -> str:
    from pgops.advisor.run import advise
    from pgops.advisor.script import render_sql

    script = render_sql(advise(ctx.dsn, ctx.settings))
    output = ctx.settings.advisor.output
    if output is None:
        log.info("index advice:\n%s", script)
        return "advice logged"
    _write_atomically(output, script)
    return f"advice written to {output}"


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
        jobs.append(Job("refresh", Every(settings.refresh.interval), _refresh))
    if "cleanup" in wanted:
        policies = sorted(settings.cleanup.policies.items())
        jobs += [Job(f"cleanup:{name}", Cron(policy.schedule), _cleanup(name)) for name, policy in policies]
    if "pool-sample" in wanted:
        jobs.append(Job("pool-sample", Every(settings.pool_report.interval), _pool_sample, exclusive=False))
    if "advisor" in wanted:
        jobs.append(Job("advisor", Every(settings.advisor.interval), _advise))
    return jobs


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
