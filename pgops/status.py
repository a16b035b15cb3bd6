"""`pgops status`: is this database ready for pgops, and what would each job lack?"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from pgops import db
from pgops.config import Settings
from pgops.errors import EXIT_CRITICAL, EXIT_OK, EXIT_WARNING
from pgops.migrate import current_revision, head_revision
from pgops.refresh import cron
from pgops.resources import read_sql

OK, WARNING, CRITICAL = "ok", "warning", "critical"


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    detail: str


@dataclass(frozen=True)
class Status:
    server: str
    database: str
    user: str
    checks: list[Check]

    @property
    def exit_code(self) -> int:
        levels = {check.level for check in self.checks}
        return EXIT_CRITICAL if CRITICAL in levels else EXIT_WARNING if WARNING in levels else EXIT_OK


def gather(dsn: str, settings: Settings) -> Status:
    with db.connect(dsn, settings.database) as conn:
        cur = conn.execute(read_sql("status/overview.sql"))
        row = dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))
        row["pg_stat_statements_usable"] = _pg_stat_statements_usable(conn, row)
        row["orphaned_jobs"] = cron.orphaned_jobs(conn)
    return Status(
        server=row["server_version"],
        database=row["database"],
        user=row["user"],
        checks=evaluate(row, current_revision(dsn, settings), head_revision(settings)),
    )


def _pg_stat_statements_usable(conn, row: dict) -> bool:
    """Loaded and created: ask the view itself (a plain role can't read shared_preload_libraries)."""
    if not (row["extensions"] or {}).get("pg_stat_statements"):
        return False
    try:
        with conn.transaction():
            conn.execute("SELECT 1 FROM pg_stat_statements LIMIT 1")
    except psycopg.errors.ObjectNotInPrerequisiteState:
        return False
    return True


def evaluate(row: dict, installed: str | None, head: str | None) -> list[Check]:
    """Pure: turn the overview row and the schema revisions into checks with a fix for each problem."""
    checks = []
    if installed is None:
        checks.append(Check("pgops schema", CRITICAL, "not installed: run `pgops migrate`"))
    elif installed != head:
        checks.append(Check("pgops schema", WARNING, f"at {installed}, latest is {head}: run `pgops migrate`"))
    else:
        checks.append(Check("pgops schema", OK, f"at {installed} (latest)"))

    extensions = row["extensions"] or {}
    if row["pg_stat_statements_usable"]:
        checks.append(Check("pg_stat_statements", OK, "installed"))
    elif not extensions.get("pg_stat_statements"):
        checks.append(
            Check(
                "pg_stat_statements",
                WARNING,
                "not created here (CREATE EXTENSION pg_stat_statements): the index advisor can only read "
                "--from-file/--from-log",
            )
        )
    else:
        checks.append(
            Check("pg_stat_statements", WARNING, "created but not loaded: add it to shared_preload_libraries")
        )

    if "hypopg" not in extensions:
        major = row["server_version_num"] // 10000 if row.get("server_version_num") else "NN"
        checks.append(
            Check("hypopg", WARNING, f"not available: index advice is unvalidated (Debian: postgresql-{major}-hypopg)")
        )
    elif not extensions["hypopg"]:
        checks.append(Check("hypopg", WARNING, "available but not created here: CREATE EXTENSION hypopg"))
    else:
        checks.append(Check("hypopg", OK, "installed"))

    if row["cron_database"] is None and not row["reads_all_settings"]:
        checks.append(Check("pg_cron", OK, "unknown: reading cron.database_name needs pg_read_all_settings"))
    elif row["cron_database"] is None:
        checks.append(Check("pg_cron", OK, "not loaded: the daemon does the scheduled work"))
    else:
        checks.append(Check("pg_cron", OK, f"preloaded; jobs live in database {row['cron_database']}"))
    # pg_cron fails a job of a dropped database every run, forever (and logs a FATAL each time)
    for job in row.get("orphaned_jobs") or []:
        checks.append(
            Check(
                "pg_cron job",
                WARNING,
                f"{job.jobname} (job {job.jobid}) is for database {job.database}, which no longer exists, and "
                f"fails every run: in database {job.cron_database}, run {job.fix}",
            )
        )

    if row["superuser"]:
        checks.append(Check("privileges", WARNING, f"{row['user']} is a superuser: pgops needs less"))
    elif not row["pg_monitor"]:
        checks.append(
            Check(
                "privileges",
                WARNING,
                f"{row['user']} lacks pg_monitor: others' queries are hidden (GRANT pg_monitor TO {row['user']})",
            )
        )
    else:
        checks.append(Check("privileges", OK, f"{row['user']} has pg_monitor"))
    return checks
