"""Running jobs: APScheduler 3 wiring (one instance per job, coalesced misfires, a grace time) and the guarded,
retried, measured run of one job.

A run takes a pooled connection, the job's run lock on it and (when scheduled) the claim of its period, then
calls the job; transient failures (lost connection, server restart, deadlock, lock timeout) are retried with
exponential backoff and jitter, and any failure is logged and counted, never raised into the scheduler, so one
failing job stops neither the daemon nor the other jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from psycopg_pool import ConnectionPool

from pgops import crontab, db, metrics
from pgops.config import Settings
from pgops.daemon.guard import Coordinator, run_lock
from pgops.daemon.jobs import Cron, Every, Job, JobContext
from pgops.daemon.systemd import Notifier
from pgops.errors import PgopsError, first_line

log = logging.getLogger(__name__)

# Interval slots are multiples of the interval since this instant, so every daemon computes the same slots.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
POOL_WAIT = 5.0  # seconds a run waits for a pooled connection before the attempt counts as a transient failure


class Outcome(StrEnum):
    ok = "ok"
    failed = "failed"
    locked = "locked"  # another daemon is running the job
    done = "done"  # another daemon already ran this period
    stopped = "stopped"  # the daemon is stopping: the run ended early or never started
    busy = "busy"  # not started: the job's previous run in this daemon is still going


@dataclass(frozen=True)
class RunResult:
    job: str
    outcome: Outcome
    seconds: float
    detail: str


class Stopping(Exception):
    """Raised out of a retry pause when the daemon stops, so no new attempt starts."""


def log_level(result: RunResult, previous: RunResult | None) -> int:
    """Failures are errors; a run that tells nothing new (another daemon had it, or the same summary as last time,
    such as a refresh every 5 s finding nothing due) is debug, so journald keeps the lines that matter."""
    if result.outcome is Outcome.failed:
        return logging.ERROR
    if result.outcome in (Outcome.locked, Outcome.done):
        return logging.DEBUG
    unchanged = previous is not None and (previous.outcome, previous.detail) == (result.outcome, result.detail)
    return logging.DEBUG if unchanged and result.outcome is Outcome.ok else logging.INFO


def make_trigger(schedule: Every | Cron) -> BaseTrigger:
    if isinstance(schedule, Every):
        if schedule.interval <= timedelta(0):
            raise PgopsError(f"a job interval must be positive, got {schedule.interval}")
        return IntervalTrigger(seconds=schedule.interval.total_seconds(), start_date=EPOCH, timezone=UTC)
    try:
        return crontab.trigger(schedule.expression)
    except ValueError as exc:
        raise PgopsError(f"invalid cron schedule {schedule.expression!r}: {exc}") from None


def period_end(trigger: BaseTrigger, now: datetime) -> datetime:
    """The end of the schedule period `now` falls in: the first fire time after it. Same on every daemon."""
    return trigger.get_next_fire_time(None, now + timedelta(microseconds=1))


class JobRunner:
    """Runs jobs under the guard; knows which run right now, for health, STATUS and a clean stop."""

    def __init__(
        self,
        settings: Settings,
        pool: ConnectionPool,
        coordinator: Coordinator,
        stop: threading.Event,
        notifier: Notifier,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.coordinator = coordinator
        self.stop = stop
        self.notifier = notifier
        self.last: dict[str, RunResult] = {}
        self._running: dict[str, float] = {}
        self._changed = threading.Condition()

    @property
    def running(self) -> list[str]:
        with self._changed:
            return sorted(self._running)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job runs; False when some still run after `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._running, timeout)

    def _pause(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopping

    def run(self, job: Job, *, period: datetime | None = None) -> RunResult:
        """One guarded run; `period` (the end of the schedule slot) makes it once per slot across daemons."""
        started = time.monotonic()
        if self.stop.is_set():
            return self._finish(job, Outcome.stopped, started, "daemon stopping")
        with self._changed:
            self._running[job.name] = started
        metrics.DAEMON_JOB_RUNNING.labels(job.name).set(1)
        self.notifier.status(f"running {job.name}")
        try:
            outcome, detail = db.retry(
                lambda: self._counting_retries(job, period), what=f"job {job.name}", sleep=self._pause
            )
        except Stopping:
            outcome, detail = Outcome.stopped, "daemon stopping during a retry pause"
        except PgopsError as exc:
            outcome, detail = Outcome.failed, exc.message
        except Exception as exc:
            log.exception("job %s failed", job.name, extra={"job": job.name})
            outcome, detail = Outcome.failed, f"{type(exc).__name__}: {first_line(exc)}"
        finally:
            with self._changed:
                self._running.pop(job.name, None)
                self._changed.notify_all()
            metrics.DAEMON_JOB_RUNNING.labels(job.name).set(0)
        if outcome is Outcome.ok and self.stop.is_set():
            outcome = Outcome.stopped
        return self._finish(job, outcome, started, detail)

    def _counting_retries(self, job: Job, period: datetime | None) -> tuple[Outcome, str]:
        try:
            return self._attempt(job, period)
        except Exception as exc:
            if db.is_transient(exc):
                metrics.DAEMON_JOB_RETRIES.labels(job.name).inc()
            raise

    def _attempt(self, job: Job, period: datetime | None) -> tuple[Outcome, str]:
        with self.pool.connection(timeout=POOL_WAIT) as conn:
            context = JobContext(job.name, self.settings.dsn, self.settings, conn, self.stop.is_set)
            if not job.exclusive:
                return Outcome.ok, job.run(context) or ""
            with run_lock(conn, job.name) as got:
                if not got:
                    return Outcome.locked, "another daemon is running it"
                if period is not None and not self.coordinator.claim(job.name, period):
                    return Outcome.done, "another daemon ran this period"
                try:
                    return Outcome.ok, job.run(context) or ""
                except BaseException:
                    if period is not None:
                        self.coordinator.release(job.name)  # the period's work is not done: let it run again
                    raise

    def _finish(self, job: Job, outcome: Outcome, started: float, detail: str) -> RunResult:
        seconds = time.monotonic() - started
        result = RunResult(job.name, outcome, seconds, detail)
        level = log_level(result, self.last.get(job.name))
        self.last[job.name] = result
        metrics.DAEMON_JOB_RUNS.labels(job.name, outcome.value).inc()
        if outcome in (Outcome.ok, Outcome.stopped):
            metrics.DAEMON_JOB_DURATION.labels(job.name).observe(seconds)
        if outcome is Outcome.ok:
            metrics.DAEMON_JOB_LAST_SUCCESS.labels(job.name).set(time.time())
        log.log(
            level,
            "job %s %s in %.2fs%s",
            job.name,
            outcome.value,
            seconds,
            f": {detail}" if detail else "",
            extra={"job": job.name, "outcome": outcome.value, "seconds": round(seconds, 3)},
        )
        self.notifier.status(f"{job.name} {outcome.value}{f': {detail}' if detail else ''}")
        return result


def build_scheduler(jobs: list[Job], runner: JobRunner, settings: Settings) -> BackgroundScheduler:
    """An in-memory scheduler: one instance per job, misfires coalesced into one run within the grace time."""
    scheduler = BackgroundScheduler(
        # every run holds one pooled connection, so never more runs at once than the pool has connections
        executors={"default": ThreadPoolExecutor(max_workers=settings.daemon.pool_max_size)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": max(1, int(settings.daemon.misfire_grace_time.total_seconds())),
        },
        timezone=UTC,
    )
    for job in jobs:
        try:
            trigger = make_trigger(job.schedule)
        except PgopsError as exc:  # a plugin's job: no config check has seen its schedule
            raise PgopsError(f"daemon job {job.name!r}: {exc.message}") from None

        def fire(job: Job = job, trigger: BaseTrigger = trigger) -> None:
            runner.run(job, period=period_end(trigger, datetime.now(UTC)))

        scheduler.add_job(fire, trigger, id=job.name, name=job.name)
        for outcome in Outcome:
            metrics.DAEMON_JOB_RUNS.labels(job.name, outcome.value)
        metrics.DAEMON_JOB_RETRIES.labels(job.name)
        metrics.DAEMON_JOB_RUNNING.labels(job.name).set(0)
    scheduler.add_listener(_count_busy, EVENT_JOB_MAX_INSTANCES)
    return scheduler


def _count_busy(event: JobSubmissionEvent) -> None:
    metrics.DAEMON_JOB_RUNS.labels(event.job_id, Outcome.busy.value).inc()


class _DropBusyWarnings(logging.Filter):
    """A refresh every 5 s that takes minutes would log APScheduler's "maximum number of running instances"
    warning every 5 s; the skips are counted as outcome="busy" instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in record.getMessage()


logging.getLogger("apscheduler.scheduler").addFilter(_DropBusyWarnings())
