"""Jobs for the pages' tests, registered through `[daemon] plugins`: the built-in cleanup and advisor jobs (the
same functions, so they record what the pages show the same way), on a one-second schedule instead of a crontab
and every six hours; the advisor only once, since each of its runs takes a process and seconds of CPU."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from pgops.cleanup.policy import resolve_policies
from pgops.config import Settings
from pgops.daemon import jobs
from pgops.daemon.jobs import Every, Job, JobContext

SOON = Every(timedelta(seconds=1))


def _once(run: Callable[[JobContext], str | None]) -> Callable[[JobContext], str | None]:
    done: list[str | None] = []

    def job(ctx: JobContext) -> str | None:
        if not done:
            done.append(run(ctx))
        return done[0]

    return job


def web_jobs(settings: Settings) -> list[Job]:
    policies = resolve_policies(settings).items()
    return [
        *(Job(f"cleanup:{name}", SOON, jobs._cleanup(name, policy)) for name, policy in policies),
        Job("advisor", SOON, _once(jobs._advise)),
    ]
