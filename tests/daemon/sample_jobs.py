"""Small jobs the daemon tests register through `[daemon] plugins`, the same mechanism as any site's own jobs.

Each records what it did in the test database, so a test reads the outcome from PostgreSQL rather than from the
daemon's own account. Tuning comes from environment variables, because a plugin factory gets only the settings
(and a subprocess daemon only its environment).
"""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import timedelta

from pgops.config import Settings
from pgops.daemon.jobs import Every, Job, JobContext, default_jobs

INTERVAL = timedelta(seconds=1)


def _number(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


# -- ledger: what ran when, to check "once per period" and "never at the same time" -----------------------------

LEDGER_DDL = """
CREATE TABLE daemon_test_runs (
    job text NOT NULL,
    runner text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL
)"""


def _recording(seconds: float):
    def run(ctx: JobContext) -> str:
        started = ctx.conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(seconds)
        ctx.conn.execute(
            "INSERT INTO daemon_test_runs VALUES (%s, %s, %s, clock_timestamp())",
            (ctx.job, os.environ.get("PGOPS_TEST_RUNNER", str(os.getpid())), started),
        )
        return "recorded"

    return run


def ledger_jobs(settings: Settings) -> list[Job]:
    """`tick` is instant (the slot claim, not the run lock, keeps a second daemon from rerunning its period);
    `slow` lasts a while (the run lock keeps a second daemon out while it runs)."""
    return [
        Job("tick", Every(INTERVAL), _recording(0)),
        Job("slow", Every(INTERVAL), _recording(_number("PGOPS_TEST_SLOW_SECONDS", 0.3))),
    ]


# -- hold: a long run, interruptible or not ---------------------------------------------------------------------


def _hold(ctx: JobContext) -> str:
    """Delete rows in an open transaction and keep it open: cancelled (rolled back) unless it finishes."""
    seconds = _number("PGOPS_TEST_HOLD_SECONDS", 30)
    honour_stop = os.environ.get("PGOPS_TEST_HOLD_IGNORES_STOP") != "1"
    with ctx.conn.transaction():
        ctx.conn.execute("DELETE FROM daemon_test_items")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (honour_stop and ctx.should_stop()):
            time.sleep(0.05)
        ctx.conn.execute(
            "INSERT INTO daemon_test_runs VALUES (%s, %s, now(), clock_timestamp())",
            (ctx.job, os.environ.get("PGOPS_TEST_RUNNER", str(os.getpid()))),
        )
    return "held"


def hold_jobs(settings: Settings) -> list[Job]:
    return [Job("hold", Every(INTERVAL), _hold)]


# -- purge: a cleanup-like job, batch after batch, each batch committed with its log row ------------------------

ITEMS_DDL = """
CREATE TABLE daemon_test_items (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false);
CREATE TABLE daemon_test_batches (batch serial PRIMARY KEY, rows int NOT NULL, at timestamptz DEFAULT now())"""


def _purge(ctx: JobContext) -> str:
    batch = int(_number("PGOPS_TEST_BATCH", 50))
    pause = _number("PGOPS_TEST_PAUSE", 0.2)
    deleted = 0
    while not ctx.should_stop():
        with ctx.conn.transaction():
            rows = ctx.conn.execute(
                "DELETE FROM daemon_test_items WHERE id IN (SELECT id FROM daemon_test_items ORDER BY id LIMIT %s)",
                (batch,),
            ).rowcount
            if rows == 0:
                break
            ctx.conn.execute("INSERT INTO daemon_test_batches (rows) VALUES (%s)", (rows,))
        deleted += rows
        time.sleep(pause)
    return f"{deleted} rows deleted"


def purge_jobs(settings: Settings) -> list[Job]:
    return [Job("purge", Every(INTERVAL), _purge)]


# -- drain: a work queue that must be finished even across a server restart --------------------------------------


def _drain(ctx: JobContext) -> str:
    done = 0
    while not ctx.should_stop():
        rows = ctx.conn.execute(
            "UPDATE daemon_test_items SET done = true "
            "WHERE id IN (SELECT id FROM daemon_test_items WHERE NOT done ORDER BY id LIMIT 5)"
        ).rowcount
        if rows == 0:
            break
        done += rows
        time.sleep(0.1)
    return f"{done} items done"


def drain_jobs(settings: Settings) -> list[Job]:
    return [Job("drain", Every(INTERVAL), _drain)]


# -- failing: a job that always fails, next to one that works ---------------------------------------------------


def _fail(ctx: JobContext) -> str:
    raise RuntimeError("this job always fails")


def failing_jobs(settings: Settings) -> list[Job]:
    return [Job("fails", Every(INTERVAL), _fail), Job("tick", Every(INTERVAL), _recording(0))]


# -- unschedulable: a schedule no config check sees, refused by the scheduler after HTTP is bound ----------------


def unschedulable_jobs(settings: Settings) -> list[Job]:
    return [Job("tick", Every(INTERVAL), _recording(0)), Job("never", Every(timedelta(0)), _recording(0))]


# -- none: a daemon that only serves HTTP, for tests of the endpoint -----------------------------------------------


def no_jobs(settings: Settings) -> list[Job]:
    return []


# -- writing: the built-in refresh and cleanup, cleanup every 0.5 s instead of on a crontab (once a minute at best) --


def writing_jobs(settings: Settings) -> list[Job]:
    """The real refresh and cleanup jobs (primary-only), on a schedule a test can wait for."""
    wanted = dataclasses.replace(settings, daemon=dataclasses.replace(settings.daemon, jobs=["refresh", "cleanup"]))
    fast = Every(timedelta(seconds=0.5))
    return [dataclasses.replace(job, schedule=fast) if job.name != "refresh" else job for job in default_jobs(wanted)]
