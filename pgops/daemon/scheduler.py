"""Running jobs: APScheduler 3 wiring (one instance per job, coalesced misfires, a grace time) and the guarded,
retried, measured run of one job.

A run takes a pooled connection, the job's run lock on it and (when scheduled) the claim of its period, then
calls the job; transient failures (lost connection, server restart, deadlock, lock timeout) are retried with
exponential backoff and jitter, and any failure is logged and counted, never raised into the scheduler, so one
failing job stops neither the daemon nor the other jobs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import psycopg
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from psycopg_pool import ConnectionPool

from pgops import crontab, db, metrics
from pgops.config import Settings
from pgops.daemon.failover import Server, ServerWatch, read_server
from pgops.daemon.guard import Coordinator, run_lock
from pgops.daemon.jobs import Cron, Every, Job, JobContext
from pgops.daemon.systemd import Notifier
from pgops.errors import ConnectError, PgopsError, first_line

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
    paused = "paused"  # a primary-only job on a read-only server (a standby): it waits for a primary


@dataclass(frozen=True)
class RunResult:
    job: str  # the job's id: its name, prefixed by its target's name (`main/refresh`) unless that is "default"
    outcome: Outcome
    seconds: float
    detail: str
    target: str = "default"


class Stopping(Exception):
    """Raised out of a retry pause when the daemon stops, so no new attempt starts."""


def log_level(result: RunResult, previous: RunResult | None) -> int:
    """Failures are errors; a run that tells nothing new (another daemon had it, or the same summary as last time,
    such as a refresh every 5 s finding nothing due) is debug, so journald keeps the lines that matter."""
    if result.outcome is Outcome.failed:
        return logging.ERROR
    if result.outcome in (Outcome.locked, Outcome.done, Outcome.paused):  # a pause is logged when it starts
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


@dataclass(frozen=True)
class Lifecycle:
    """What every target's runner shares with the daemon: its stop request and its systemd notifier."""

    stop: threading.Event
    notifier: Notifier


class JobRunner:
    """Runs jobs under the guard; knows which run right now, for health, STATUS and a clean stop."""

    def __init__(
        self,
        settings: Settings,
        pool: ConnectionPool,
        coordinator: Coordinator,
        lifecycle: Lifecycle,
        watch: ServerWatch | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool  # replaced by the daemon when the target's URL leads to another server
        self.coordinator = coordinator
        self.stop = lifecycle.stop
        self.notifier = lifecycle.notifier
        self.watch = watch or ServerWatch("default")
        self.target = self.watch.target
        self.last: dict[str, RunResult] = {}
        self._running: dict[str, float] = {}
        self._changed = threading.Condition()

    def job_id(self, job: Job) -> str:
        """How logs, STATUS and --once name the job: with its target's name when there are named targets."""
        return job.name if self.target == "default" else f"{self.target}/{job.name}"

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
        job_id = self.job_id(job)
        with self._changed:
            self._running[job_id] = started
        metrics.DAEMON_JOB_RUNNING.labels(self.target, job.name).set(1)
        self.notifier.status(f"running {job_id}")
        target = metrics.CURRENT_TARGET.set(self.target)  # the job modules' metrics get this target's label
        try:
            outcome, detail = db.retry(
                lambda: self._counting_retries(job, period), what=f"job {job_id}", sleep=self._pause
            )
        except Stopping:
            outcome, detail = Outcome.stopped, "daemon stopping during a retry pause"
        except PgopsError as exc:
            outcome, detail = Outcome.failed, exc.message
        except Exception as exc:
            log.exception("job %s failed", job_id, extra={"job": job.name, "target": self.target})
            outcome, detail = Outcome.failed, f"{type(exc).__name__}: {first_line(exc)}"
        finally:
            metrics.CURRENT_TARGET.reset(target)
            with self._changed:
                self._running.pop(job_id, None)
                self._changed.notify_all()
            metrics.DAEMON_JOB_RUNNING.labels(self.target, job.name).set(0)
        if outcome is Outcome.ok and self.stop.is_set():
            outcome = Outcome.stopped
        return self._finish(job, outcome, started, detail)

    def _counting_retries(self, job: Job, period: datetime | None) -> tuple[Outcome, str]:
        try:
            return self._attempt(job, period)
        except Exception as exc:
            if db.is_transient(exc):
                metrics.DAEMON_JOB_RETRIES.labels(self.target, job.name).inc()
            raise

    def _attempt(self, job: Job, period: datetime | None) -> tuple[Outcome, str]:
        if job.primary_only and self.watch.paused:
            # last seen on a read-only server: ask where the URL leads now, before waiting on the pool
            server = self.coordinator.server()
            self.watch.seen(server)
            if not server.writable:
                return self._paused(job, server)
        with contextlib.ExitStack() as stack:
            try:
                conn = stack.enter_context(self.pool.connection(timeout=POOL_WAIT))
            except Exception as exc:
                standby = self._read_only_server() if job.primary_only and db.is_transient(exc) else None
                if standby is None:
                    raise
                return self._paused(job, standby)
            if job.primary_only:
                server = read_server(conn)
                self.watch.seen(server)
                if not server.writable:
                    conn.close()  # the pool replaces it, connecting through the URL's hosts again
                    return self._paused(job, server)
                self.watch.resume(job.name, server)
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
        raise AssertionError("unreachable")

    def _read_only_server(self) -> Server | None:
        """No pooled session: when the reason is that only a read-only server answers (the primary is gone, the
        standby not promoted yet), that server; None for an outage, which the usual retries handle."""
        try:
            server = self.coordinator.server()
        except (psycopg.Error, ConnectError):
            return None
        self.watch.seen(server)
        return None if server.writable else server

    def _paused(self, job: Job, server: Server) -> tuple[Outcome, str]:
        self.watch.pause(job.name, server)
        return Outcome.paused, f"{server.describe()} takes no writes"

    def _finish(self, job: Job, outcome: Outcome, started: float, detail: str) -> RunResult:
        seconds = time.monotonic() - started
        job_id = self.job_id(job)
        result = RunResult(job_id, outcome, seconds, detail, self.target)
        level = log_level(result, self.last.get(job.name))
        self.last[job.name] = result
        metrics.DAEMON_JOB_RUNS.labels(self.target, job.name, outcome.value).inc()
        if outcome in (Outcome.ok, Outcome.stopped):
            metrics.DAEMON_JOB_DURATION.labels(self.target, job.name).observe(seconds)
        if outcome is Outcome.ok:
            metrics.DAEMON_JOB_LAST_SUCCESS.labels(self.target, job.name).set(time.time())
        log.log(
            level,
            "job %s %s in %.2fs%s",
            job_id,
            outcome.value,
            seconds,
            f": {detail}" if detail else "",
            extra={"job": job.name, "target": self.target, "outcome": outcome.value, "seconds": round(seconds, 3)},
        )
        self.notifier.status(f"{job_id} {outcome.value}{f': {detail}' if detail else ''}")
        return result


def build_scheduler(work: list[tuple[JobRunner, Job]], settings: Settings) -> BackgroundScheduler:
    """An in-memory scheduler for every target's jobs (each pair: the target's runner, one of its jobs): one
    instance per job, misfires coalesced into one run within the grace time."""
    targets = len({id(runner) for runner, _ in work}) or 1
    scheduler = BackgroundScheduler(
        # every run holds one pooled connection of its target, so never more runs at once than the pools have
        executors={"default": ThreadPoolExecutor(max_workers=settings.daemon.pool_max_size * targets)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": max(1, int(settings.daemon.misfire_grace_time.total_seconds())),
        },
        timezone=UTC,
    )
    labels: dict[str, tuple[str, str]] = {}  # scheduler job id → (target, job) for the busy count
    for runner, job in work:
        job_id = runner.job_id(job)
        try:
            trigger = make_trigger(job.schedule)
        except PgopsError as exc:  # a plugin's job: no config check has seen its schedule
            raise PgopsError(f"daemon job {job_id!r}: {exc.message}") from None

        def fire(runner: JobRunner = runner, job: Job = job, trigger: BaseTrigger = trigger) -> None:
            runner.run(job, period=period_end(trigger, datetime.now(UTC)))

        scheduler.add_job(fire, trigger, id=job_id, name=job_id)
        labels[job_id] = (runner.target, job.name)
        for outcome in Outcome:
            metrics.DAEMON_JOB_RUNS.labels(runner.target, job.name, outcome.value)
        metrics.DAEMON_JOB_RETRIES.labels(runner.target, job.name)
        metrics.DAEMON_JOB_RUNNING.labels(runner.target, job.name).set(0)

    def count_busy(event: JobSubmissionEvent) -> None:
        metrics.DAEMON_JOB_RUNS.labels(*labels[event.job_id], Outcome.busy.value).inc()

    scheduler.add_listener(count_busy, EVENT_JOB_MAX_INSTANCES)
    return scheduler


class _DropBusyWarnings(logging.Filter):
    """A refresh every 5 s that takes minutes would log APScheduler's "maximum number of running instances"
    warning every 5 s; the skips are counted as outcome="busy" instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in record.getMessage()


logging.getLogger("apscheduler.scheduler").addFilter(_DropBusyWarnings())
