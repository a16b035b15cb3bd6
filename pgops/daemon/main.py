"""The daemon's life: connect, check pgops' schema, schedule the jobs, serve HTTP, watch its own health, and on
SIGTERM stop scheduling, let the running batch finish (or abandon it, its transaction rolls back) and exit 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import NoReturn

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler
from psycopg_pool import ConnectionPool

from pgops import db, metrics, migrate
from pgops.config import Settings, Target
from pgops.daemon.failover import ServerWatch
from pgops.daemon.guard import Coordinator
from pgops.daemon.http import Health, HealthServer, parse_listen
from pgops.daemon.jobs import Job, load_jobs
from pgops.daemon.scheduler import JobRunner, Lifecycle, Outcome, RunResult, Stopping, build_scheduler, first_line
from pgops.daemon.systemd import Notifier, watchdog_interval
from pgops.errors import ConnectError, PgopsError
from pgops.web import WebPages, make_pages
from pgops.web.auth import required_token
from pgops.web.history import HISTORY

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


def target_settings(settings: Settings, target: Target, several: bool, *, first: bool = True) -> Settings:
    """The settings a target's jobs run with: its URL and, when the daemon has several targets, an advice file of
    its own (`advice.sql` → `advice.<target>.sql`), so no target's script overwrites another's. PgBouncer's
    console (`[pool_report] pgbouncer_url`) pools one server's clients: only the first target's samples read it."""
    pool_report = settings.pool_report
    if not first:
        pool_report = dataclasses.replace(pool_report, pgbouncer_url=None)
    advisor = settings.advisor
    if several and advisor.output is not None:
        output = advisor.output
        advisor = dataclasses.replace(advisor, output=output.with_name(f"{output.stem}.{target.name}{output.suffix}"))
    database = dataclasses.replace(settings.database, url=target.url)
    return dataclasses.replace(settings, database=database, advisor=advisor, pool_report=pool_report)


class TargetWork:
    """One target's share of the daemon: its settings and jobs, its pool, its coordination session (slot claims,
    health), the watch on its server's role, and the runner of its jobs. Advisory locks are per database, so
    targets that are databases of one server never contend for each other's locks."""

    def __init__(
        self, name: str, settings: Settings, jobs: list[Job], stop_event: threading.Event, notifier: Notifier
    ) -> None:
        self.name = name
        self.settings = settings
        self.jobs = jobs
        self.pool = self._make_pool()
        self.coordinator = Coordinator(settings.dsn, settings.database)
        self.watch = ServerWatch(name, on_primary=self._renew_pool)
        self.runner = JobRunner(settings, self.pool, self.coordinator, Lifecycle(stop_event, notifier), self.watch)
        self.database_was_ok = True

    def _make_pool(self) -> ConnectionPool:
        return db.make_pool(
            self.settings.dsn,
            self.settings.database,
            min_size=self.settings.daemon.pool_min_size,
            max_size=self.settings.daemon.pool_max_size,
            name=f"pgops-daemon-{self.name}",
        )

    def _renew_pool(self) -> None:
        """A primary again (a failover, a promotion): a fresh pool connects to it at once, where the old one would
        first wait out the reconnection backoff (up to 30 s) it grew while no server took writes."""
        old, self.pool = self.pool, self._make_pool()
        self.pool.open(wait=False)
        self.runner.pool = self.pool
        old.close(timeout=1)  # its sessions still in use close when their runs hand them back

    @property
    def prefix(self) -> str:
        """`target main: ` in messages, nothing for the one unnamed target."""
        return "" if self.name == "default" else f"target {self.name}: "

    def connect(self, pause: Callable[[float], None]) -> None:
        """Reach the database (riding through a server that is starting) and check pgops' schema."""
        try:
            db.retry(self.coordinator.ping, what=f"{self.prefix}connecting to the database", sleep=pause)
        except ConnectError as exc:
            raise ConnectError(f"{self.prefix}{exc.message}", transient=exc.transient) from None
        except psycopg.Error as exc:
            raise ConnectError(
                f"{self.prefix}can't connect to {db.describe(self.settings.dsn)}: {first_line(exc)}"
            ) from None
        try:
            check_schema(self.settings)
        except PgopsError as exc:
            raise PgopsError(f"{self.prefix}{exc.message}") from None
        self.pool.open(wait=False)

    def check(self) -> str | None:
        """Ask the server where the URL leads and its role now; the reason when it does not answer."""
        try:
            self.watch.seen(self.coordinator.server())
            reason = None
        except Exception as exc:
            reason = f"{self.prefix}database not answering: {first_line(exc)}"
        if (reason is None) != self.database_was_ok:
            if reason is None:
                log.info("%sthe database answers again", self.prefix, extra={"target": self.name})
            else:
                log.warning("%s", reason, extra={"target": self.name})
            self.database_was_ok = reason is None
        metrics.DAEMON_DATABASE_UP.labels(self.name).set(reason is None)
        return reason

    def close(self) -> None:
        self.pool.close(timeout=2)
        self.coordinator.close()


class Daemon:
    """One daemon: every target's jobs (each target with its pool and coordination session), one scheduler and
    (optionally) one HTTP endpoint. `jobs`, when given, replace the configured ones on every target."""

    def __init__(self, settings: Settings, jobs: list[Job] | None = None, *, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.stop_event = threading.Event()
        targets = settings.targets()
        self.targets: list[TargetWork] = []
        for number, target in enumerate(targets):
            own = target_settings(settings, target, several=len(targets) > 1, first=number == 0)
            own_jobs = load_jobs(own) if jobs is None else jobs
            self.targets.append(TargetWork(target.name, own, own_jobs, self.stop_event, self.notifier))
        self.scheduler: BackgroundScheduler | None = None
        self.http: HealthServer | None = None

    # the first target's: the only one of a daemon on one URL
    @property
    def jobs(self) -> list[Job]:
        return self.targets[0].jobs

    @property
    def runner(self) -> JobRunner:
        return self.targets[0].runner

    @property
    def running(self) -> list[str]:
        return [job for target in self.targets for job in target.runner.running]

    def _pause(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise Stopping

    def connect(self) -> None:
        """Reach every target's database and check pgops' schema there."""
        for target in self.targets:
            self.notifier.status(f"connecting to {target.prefix}{db.describe(target.settings.dsn)}")
            target.connect(self._pause)

    def start(self, listen: str | None) -> None:
        """Connect, schedule the jobs, serve HTTP, then tell systemd READY=1."""
        self.connect()
        if listen:
            self.http = HealthServer(listen, self.health, self._pages(listen))
        work = [(target.runner, job) for target in self.targets for job in target.jobs]
        self.scheduler = build_scheduler(work, self.settings)
        self.scheduler.start()
        if self.http:
            self.http.start()
            served = "the pages, /metrics and /healthz" if self.settings.web.enabled else "/metrics and /healthz"
            log.info("serving %s on http://%s", served, self.http.address)
        metrics.DAEMON_HEALTHY.set(1)
        for target in self.targets:
            metrics.DAEMON_DATABASE_UP.labels(target.name).set(1)
        self.notifier.ready(self.status_line())
        names = [runner.job_id(job) for runner, job in work]
        log.info("daemon ready: %s", ", ".join(names) or "no jobs")

    def _pages(self, listen: str) -> WebPages | None:
        """The read-only pages (None when `[web] enabled = false`); refused beyond loopback without a token.
        They show the first target's server (each page reads one database)."""
        first = self.targets[0]
        HISTORY.target = first.name  # and keep only its runs for them
        return make_pages(first.settings, first.settings.dsn, parse_listen(listen)[0], lambda: dict(first.runner.last))

    def health(self) -> Health:
        """Healthy while the scheduler runs and every target's database answers; the reason says what is wrong."""
        scheduler_running = self.scheduler is not None and self.scheduler.running and not self.stop_event.is_set()
        reasons = [] if scheduler_running else ["scheduler not running"]
        answering = []
        for target in self.targets:
            reason = target.check()
            answering.append(reason is None)
            if reason is not None:
                reasons.append(reason)
        database_ok = all(answering)
        metrics.DAEMON_HEALTHY.set(database_ok and scheduler_running)
        return Health(
            ok=database_ok and scheduler_running,
            reason="; ".join(reasons) or "ok",
            scheduler_running=scheduler_running,
            database_ok=database_ok,
            running_jobs=self.running,
            targets=[target.watch.health(ok) for target, ok in zip(self.targets, answering, strict=True)],
        )

    def status_line(self, health: Health | None = None) -> str:
        running = self.running
        scheduled = sum(len(target.jobs) for target in self.targets)
        state = "running " + ", ".join(running) if running else f"idle, {scheduled} job(s) scheduled"
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
        running = self.running
        if self.scheduler is not None:  # not a start that failed before scheduling anything
            self.notifier.stopping("stopping" + (f", finishing {', '.join(running)}" if running else ""))
            log.info("stopping%s", f", waiting for {', '.join(running)}" if running else "")
        self.stop_event.set()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + self.settings.daemon.stop_timeout.total_seconds()
        finished = all(target.runner.wait_idle(max(0.0, deadline - time.monotonic())) for target in self.targets)
        if self.http is not None:
            self.http.stop()
        if finished:
            self.close()
        return finished

    def close(self) -> None:
        for target in self.targets:
            target.close()
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
    daemon = Daemon(settings)
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
    log.warning("stop timeout reached: abandoning %s", ", ".join(daemon.running))
    if error is not None:  # the CLI never gets to print it
        log.error("%s", error)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


def run_once(settings: Settings) -> list[RunResult]:
    """`pgops daemon --once`: each job once, in order, under the same locks as the daemon (for cron and tests)."""
    daemon = Daemon(settings)
    with _stop_on_signals(daemon.stop_event), contextlib.closing(daemon):
        try:
            daemon.connect()
            return [target.runner.run(job) for target in daemon.targets for job in target.jobs]
        except Stopping:
            return [
                RunResult(target.runner.job_id(job), Outcome.stopped, 0.0, "daemon stopping", target.name)
                for target in daemon.targets
                for job in target.jobs
            ]
