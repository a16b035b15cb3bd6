"""The daemon's life: connect, check pgops' schema, schedule the jobs, serve HTTP, watch its own health, and on
SIGTERM stop scheduling, let the running batch finish (or abandon it, its transaction rolls back) and exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import NoReturn

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler

from pgops import db, metrics, migrate
from pgops.config import Settings
from pgops.daemon.guard import Coordinator
from pgops.daemon.http import Health, HealthServer, parse_listen
from pgops.daemon.jobs import Job, load_jobs
from pgops.daemon.scheduler import JobRunner, Outcome, RunResult, Stopping, build_scheduler, first_line
from pgops.daemon.systemd import Notifier, watchdog_interval
from pgops.errors import PgopsError
from pgops.web import WebPages, make_pages
from pgops.web.auth import required_token

log = logging.getLogger(__name__)


def check_schema(settings: Settings) -> str | None:
    """The installed pgops revision, when it is the one this pgops needs; else one line saying to migrate."""
    installed = migrate.current_revision(settings.dsn, settings)
    head = migrate.head_revision(settings)
    if installed == head:
        return installed
    where = db.describe(settings.dsn)
    if installed is None:
        raise PgopsError(f"pgops is not installed in {where}: run `pgops migrate` first")
    raise PgopsError(f"pgops' schema in {where} is at {installed}, this pgops needs {head}: run `pgops migrate`")


class Daemon:
    """One daemon: its pool, its coordination session, its scheduler and (optionally) its HTTP endpoint."""

    def __init__(self, settings: Settings, jobs: list[Job], *, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.jobs = jobs
        self.notifier = notifier or Notifier()
        self.stop_event = threading.Event()
        self.pool = db.make_pool(
            settings.dsn,
            settings.database,
            min_size=settings.daemon.pool_min_size,
            max_size=settings.daemon.pool_max_size,
            name="pgops-daemon",
        )
        self.coordinator = Coordinator(settings.dsn, settings.database)
        self.runner = JobRunner(settings, self.pool, self.coordinator, self.stop_event, self.notifier)
        self.scheduler: BackgroundScheduler | None = None
        self.http: HealthServer | None = None
        self._database_was_ok = True

    def _pause(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise Stopping

    def connect(self) -> None:
        """Reach the database (riding through a server that is starting) and check pgops' schema."""
        self.notifier.status(f"connecting to {db.describe(self.settings.dsn)}")
        try:
            db.retry(self.coordinator.ping, what="connecting to the database", sleep=self._pause)
        except psycopg.Error as exc:
            raise PgopsError(f"can't connect to {db.describe(self.settings.dsn)}: {first_line(exc)}") from None
        check_schema(self.settings)
        self.pool.open(wait=False)

    def start(self, listen: str | None) -> None:
        """Connect, schedule the jobs, serve HTTP, then tell systemd READY=1."""
        self.connect()
        if listen:
            self.http = HealthServer(listen, self.health, self._pages(listen))
        self.scheduler = build_scheduler(self.jobs, self.runner, self.settings)
        self.scheduler.start()
        if self.http:
            self.http.start()
            served = "the pages, /metrics and /healthz" if self.settings.web.enabled else "/metrics and /healthz"
            log.info("serving %s on http://%s", served, self.http.address)
        metrics.DAEMON_HEALTHY.set(1)
        metrics.DAEMON_DATABASE_UP.set(1)
        self.notifier.ready(self.status_line())
        log.info("daemon ready: %s", ", ".join(job.name for job in self.jobs) or "no jobs")

    def _pages(self, listen: str) -> WebPages | None:
        """The read-only pages (None when `[web] enabled = false`); refused beyond loopback without a token."""
        return make_pages(self.settings, self.settings.dsn, parse_listen(listen)[0], lambda: dict(self.runner.last))

    def health(self) -> Health:
        """Healthy while the scheduler runs and the database answers; the reason says what is wrong."""
        scheduler_running = self.scheduler is not None and self.scheduler.running and not self.stop_event.is_set()
        reasons = [] if scheduler_running else ["scheduler not running"]
        try:
            self.coordinator.ping()
            database_ok = True
        except Exception as exc:
            database_ok = False
            reasons.append(f"database not answering: {first_line(exc)}")
        if database_ok != self._database_was_ok:
            level = logging.INFO if database_ok else logging.WARNING
            log.log(level, "the database answers again" if database_ok else reasons[-1])
            self._database_was_ok = database_ok
        metrics.DAEMON_DATABASE_UP.set(database_ok)
        metrics.DAEMON_HEALTHY.set(database_ok and scheduler_running)
        return Health(
            ok=database_ok and scheduler_running,
            reason="; ".join(reasons) or "ok",
            scheduler_running=scheduler_running,
            database_ok=database_ok,
            running_jobs=self.runner.running,
        )

    def status_line(self, health: Health | None = None) -> str:
        running = self.runner.running
        state = "running " + ", ".join(running) if running else f"idle, {len(self.jobs)} job(s) scheduled"
        return state if health is None or health.ok else f"{state}; {health.reason}"

    def watch(self) -> None:
        """Until stopped: check health, report STATUS=, and WATCHDOG=1 while the scheduler runs.

        A database outage is reported, not punished: restarting the daemon would not bring the server back, so the
        watchdog keeps being fed while only the database is down.
        """
        interval = self.settings.daemon.health_interval
        systemd_interval = watchdog_interval()
        if systemd_interval is not None:
            interval = min(interval, systemd_interval)
        while not self.stop_event.wait(max(interval, timedelta(milliseconds=100)).total_seconds()):
            health = self.health()
            if health.scheduler_running:
                self.notifier.watchdog(self.status_line(health))
            else:
                self.notifier.status(self.status_line(health))

    def stop(self) -> bool:
        """Stop scheduling and wait for running jobs (they see should_stop); False if some still run at the timeout."""
        running = self.runner.running
        if self.scheduler is not None:  # not a start that failed before scheduling anything
            self.notifier.stopping("stopping" + (f", finishing {', '.join(running)}" if running else ""))
            log.info("stopping%s", f", waiting for {', '.join(running)}" if running else "")
        self.stop_event.set()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        finished = self.runner.wait_idle(self.settings.daemon.stop_timeout.total_seconds())
        if self.http is not None:
            self.http.stop()
        if finished:
            self.close()
        return finished

    def close(self) -> None:
        self.pool.close(timeout=2)
        self.coordinator.close()
        self.notifier.close()


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (systemd) and SIGINT (Ctrl-C) ask for a clean stop; the previous handlers come back afterwards."""

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_daemon(settings: Settings, listen: str | None) -> int:
    """`pgops daemon`: run until SIGTERM or SIGINT; exit 0 after a clean stop."""
    if listen:
        host = parse_listen(listen)[0]  # a typo fails now, not after connecting
        if settings.web.enabled:
            required_token(settings, host)  # and so does a listener beyond loopback without a token
    daemon = Daemon(settings, load_jobs(settings))
    with _stop_on_signals(daemon.stop_event):
        try:
            daemon.start(listen)
            daemon.watch()
        except Stopping:  # SIGTERM while connecting: nothing is scheduled or served yet
            daemon.close()
            return 0
        except BaseException as exc:
            # whatever failed, stop what did start (HTTP, scheduler, pool) and leave with the error, promptly
            if not daemon.stop():
                code = exc.exit_code if isinstance(exc, PgopsError) else 70  # 70: the CLI's code for a bug
                _abandon(daemon, code, first_line(exc))
            raise
        finished = daemon.stop()
    if not finished:
        _abandon(daemon, 0)
    log.info("stopped")
    return 0


def _abandon(daemon: Daemon, code: int, error: str | None = None) -> NoReturn:
    """Leave now, past the stop timeout, without the batch that ignores should_stop: the executor's exit hook would
    wait for it. The server rolls back its open transaction when the connection drops; committed batches stay."""
    log.warning("stop timeout reached: abandoning %s", ", ".join(daemon.runner.running))
    if error is not None:  # the CLI never gets to print it
        log.error("%s", error)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


def run_once(settings: Settings) -> list[RunResult]:
    """`pgops daemon --once`: each job once, in order, under the same locks as the daemon (for cron and tests)."""
    daemon = Daemon(settings, load_jobs(settings))
    with _stop_on_signals(daemon.stop_event), contextlib.closing(daemon):
        try:
            daemon.connect()
            return [daemon.runner.run(job) for job in daemon.jobs]
        except Stopping:
            return [RunResult(job.name, Outcome.stopped, 0.0, "daemon stopping") for job in daemon.jobs]
