"""Schedule `CALL pgops.process_due()` with pg_cron when the server and the role allow it
(`pgops refresh schedule`, which `pgops migrate` runs).

pg_cron keeps its jobs in one database (`cron.database_name`). When pgops lives there, the job is scheduled
there; otherwise pgops connects to that database and uses `cron.schedule_in_database` (pg_cron 1.4+). The CALL
is the job's whole command, so the procedure's COMMITs work on pg_cron 1.4. pg_cron's run history
(`cron.job_run_details`) is trimmed by one owner, the ready-made cleanup policy `cron_job_run_details`. When
pg_cron is missing or the role may not use it, the result says what is missing (`usable` is False).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg import sql

from pgops import db
from pgops.config import RefreshSettings
from pgops.errors import ConnectError, PgopsError, first_line

SCHEDULE_IN_DATABASE = "cron.schedule_in_database(text,text,text,text,text,boolean)"


@dataclass(frozen=True)
class CronResult:
    scheduled: bool  # for unschedule: whether a job was removed
    message: str
    usable: bool = True  # False: pg_cron is missing here or this role may not use it (the message says which)


@dataclass(frozen=True)
class CronPlace:
    """Where pg_cron keeps its jobs (`cron_database`: None when pg_cron is not loaded on the server)."""

    cron_database: str | None
    database: str
    role: str

    @property
    def job(self) -> str:
        return f"pgops-refresh:{self.database}"

    @property
    def history_job(self) -> str:
        return f"pgops-refresh-history:{self.database}"


def locate(conn: psycopg.Connection) -> CronPlace | None:
    """Where pg_cron keeps its jobs; None when this role may not see it (cron.database_name is superuser-only)."""
    try:
        with conn.transaction():  # a savepoint when called inside the migration's transaction
            # current_setting() refuses a role that may not read the setting; pg_settings hides a placeholder (the
            # setting in postgresql.conf while pg_cron is not loaded), which current_setting() would return
            row = conn.execute(
                "SELECT CASE WHEN current_setting('cron.database_name', true) IS NOT NULL THEN "
                "(SELECT setting FROM pg_settings WHERE name = 'cron.database_name') END, "
                "current_database(), current_user"
            ).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None
    return CronPlace(cron_database=row[0] or None, database=row[1], role=row[2])


def _hidden(conn: psycopg.Connection) -> CronResult:
    role = conn.execute("SELECT current_user").fetchone()[0]
    return _fallback(
        f"role {role} may not schedule pg_cron jobs: it can't even read cron.database_name "
        f"(a superuser can GRANT pg_read_all_settings TO {role}, then USAGE ON SCHEMA cron and EXECUTE ON "
        f"FUNCTION {SCHEDULE_IN_DATABASE} in pg_cron's database)"
    )


def process_command(settings: RefreshSettings) -> str:
    """The job's whole command (pg_cron 1.4 lets a procedure COMMIT only then), with pgops' lock_timeout."""
    ms = round(settings.lock_timeout / timedelta(milliseconds=1))  # exact, and never in exponent form
    text = f"{ms // 1000} seconds" if ms % 1000 == 0 else f"{ms} milliseconds"
    return sql.SQL("CALL pgops.process_due({})").format(sql.Literal(text)).as_string(None)


def _cron_connection(conn: psycopg.Connection, dbname: str) -> psycopg.Connection:
    """A connection to pg_cron's database as the same role, with the same parameters as `conn`."""
    return db.connect_like(conn, dbname)


def _fallback(reason: str) -> CronResult:
    return CronResult(False, f"{reason}; run `pgops daemon` to process refreshes", usable=False)


def schedule(conn: psycopg.Connection, settings: RefreshSettings, when: str | None = None) -> CronResult:
    """Schedule (or re-schedule) pgops' refresh job on `when` (default `refresh.cron_schedule`); never raises for
    a missing pg_cron or privilege: the result says what is missing. Removes the history job that pgops scheduled
    before 0004 (the ready-made cleanup policy `cron_job_run_details` trims pg_cron's history now)."""
    key = "refresh.cron_schedule" if when is None else "refresh schedule"
    when = settings.cron_schedule if when is None else when
    if not when.strip():
        return _fallback("pg_cron job not scheduled: refresh.cron_schedule is empty")
    place = locate(conn)
    if place is None:
        return _hidden(conn)
    if place.cron_database is None:
        return _fallback("pg_cron is not loaded on this server (shared_preload_libraries), so no job was scheduled")
    command = process_command(settings)
    if place.cron_database == place.database:
        return _schedule_here(conn, place, when, command, key)
    try:
        with _cron_connection(conn, place.cron_database) as cron:
            return _schedule_elsewhere(cron, place, when, command, key)
    except ConnectError as exc:
        return _fallback(f"can't connect to pg_cron's database {place.cron_database} as {place.role} ({exc.reason})")


def _drop_history_job(cron: psycopg.Connection, place: CronPlace) -> None:
    """The history job of pgops before 0004, with its runs; one owner trims cron.job_run_details now."""
    cron.execute(
        "DELETE FROM cron.job_run_details WHERE jobid IN (SELECT jobid FROM cron.job WHERE jobname = %s)",
        (place.history_job,),
    )
    cron.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s", (place.history_job,))


def _schedule_here(conn: psycopg.Connection, place: CronPlace, when: str, command: str, key: str) -> CronResult:
    installed = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]
    if not installed:
        return _fallback(f"pg_cron is loaded but not created in {place.database} (CREATE EXTENSION pg_cron)")
    try:
        with conn.transaction():  # a savepoint when called inside a transaction
            conn.execute("SELECT cron.schedule(%s, %s, %s)", (place.job, when, command))
            _drop_history_job(conn, place)
    except psycopg.errors.InsufficientPrivilege:
        return _fallback(
            f"role {place.role} may not use pg_cron in {place.database} "
            f"(a superuser can GRANT USAGE ON SCHEMA cron TO {place.role})"
        )
    except psycopg.errors.InvalidParameterValue as exc:
        raise _refused(exc, when, key) from None
    return CronResult(True, f"pg_cron job {place.job} scheduled ({when}) in {place.database}")


def _schedule_elsewhere(cron: psycopg.Connection, place: CronPlace, when: str, command: str, key: str) -> CronResult:
    may = cron.execute(
        "SELECT to_regnamespace('cron') IS NOT NULL AND has_schema_privilege('cron', 'USAGE') "
        "AND to_regprocedure(%s) IS NOT NULL AND has_function_privilege(to_regprocedure(%s), 'EXECUTE')",
        (SCHEDULE_IN_DATABASE, SCHEDULE_IN_DATABASE),
    ).fetchone()[0]
    if not may:
        return _fallback(
            f"role {place.role} may not schedule pg_cron jobs for other databases in {place.cron_database} "
            f"(pg_cron 1.4+; a superuser can GRANT USAGE ON SCHEMA cron TO {place.role} and "
            f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {place.role} there)"
        )
    try:
        with cron.transaction():
            cron.execute("SELECT cron.schedule_in_database(%s, %s, %s, %s)", (place.job, when, command, place.database))
            _drop_history_job(cron, place)
    except psycopg.errors.InsufficientPrivilege as exc:
        return _fallback(f"pg_cron refused role {place.role}: {exc.diag.message_primary}")
    except psycopg.errors.InvalidParameterValue as exc:
        raise _refused(exc, when, key) from None
    return CronResult(True, f"pg_cron job {place.job} scheduled ({when}) in {place.cron_database}")


def _refused(exc: psycopg.errors.InvalidParameterValue, when: str, key: str) -> Exception:
    """The configuration loader and `refresh schedule` refuse what no pg_cron accepts; an older pg_cron can still
    refuse the rest (pg_cron 1.4 has no `N seconds`). That is bad input, so one line naming where it came from
    (`key`), not a fallback that hides it."""
    message = exc.diag.message_primary or str(exc)
    if not message.startswith("invalid schedule"):
        return exc
    seconds = " (schedules in seconds need pg_cron 1.5 or later)" if "second" in when.lower() else ""
    fix = (
        "set a crontab such as '* * * * *' in pgops.toml or PGOPS_REFRESH_CRON_SCHEDULE"
        if key == "refresh.cron_schedule"
        else "use --every 1m or --cron '* * * * *'"
    )
    return PgopsError(f"{key}: pg_cron refused {when!r}{seconds}; {fix}")


def unschedule(conn: psycopg.Connection) -> CronResult:
    """Remove pgops' jobs of this database (and their history); a missing pg_cron is nothing to remove."""
    place = locate(conn)
    if place is None:
        role = conn.execute("SELECT current_user").fetchone()[0]
        return CronResult(False, f"role {role} may not see pg_cron, so it has no job to remove", usable=False)
    if place.cron_database is None:
        return CronResult(False, "pg_cron is not loaded: no job to remove", usable=False)
    if place.cron_database == place.database:
        installed = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]
        if not installed:
            return CronResult(False, f"pg_cron is not created in {place.database}: no job to remove", usable=False)
        return _unschedule(conn, place)
    try:
        with _cron_connection(conn, place.cron_database) as cron:
            return _unschedule(cron, place)
    except (psycopg.OperationalError, ConnectError) as exc:
        return CronResult(
            False,
            f"can't reach pg_cron's database {place.cron_database} to remove jobs: {first_line(exc)}",
            usable=False,
        )


def _unschedule(cron: psycopg.Connection, place: CronPlace) -> CronResult:
    try:
        with cron.transaction():
            ours = [place.job, place.history_job]
            jobs = cron.execute("SELECT count(*) FROM cron.job WHERE jobname = ANY(%s)", (ours,)).fetchone()[0]
            cron.execute(
                "DELETE FROM cron.job_run_details WHERE jobid IN (SELECT jobid FROM cron.job WHERE jobname = ANY(%s))",
                (ours,),
            )
            cron.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = ANY(%s)", (ours,))
    except psycopg.errors.InsufficientPrivilege:
        return CronResult(False, f"role {place.role} may not use pg_cron: no job of its own to remove", usable=False)
    return CronResult(bool(jobs), f"removed {jobs} pg_cron job(s) of {place.database}")


@dataclass(frozen=True)
class OrphanJob:
    """A pgops job of pg_cron for a database that no longer exists: pg_cron fails it on every run."""

    jobid: int
    jobname: str
    database: str  # the database that is gone
    cron_database: str  # where pg_cron keeps the job (where to run `fix`)

    @property
    def fix(self) -> str:
        return f"SELECT cron.unschedule({self.jobid})"


# pgops names its jobs `pgops-refresh:<database>` and `pgops-refresh-history:<database>`; the history job runs
# in pg_cron's own database, so the name says which database a job is for.
_ORPHANS = """
SELECT j.jobid, j.jobname,
       CASE WHEN NOT EXISTS (SELECT FROM pg_database d WHERE d.datname = j.for_database)
            THEN j.for_database ELSE j.database END
FROM (SELECT jobid, jobname, database, substr(jobname, strpos(jobname, ':') + 1) AS for_database
      FROM cron.job WHERE jobname LIKE 'pgops-refresh:%' OR jobname LIKE 'pgops-refresh-history:%') j
WHERE NOT EXISTS (SELECT FROM pg_database d WHERE d.datname = j.for_database)
   OR NOT EXISTS (SELECT FROM pg_database d WHERE d.datname = j.database)
ORDER BY j.jobid
"""


def orphaned_jobs(conn: psycopg.Connection) -> list[OrphanJob] | None:
    """pgops' pg_cron jobs (of any database, as far as this role may see them) whose database no longer exists;
    None when pg_cron is not loaded or this role may not read its jobs."""
    place = locate(conn)
    if place is None or place.cron_database is None:
        return None
    if place.cron_database == place.database:
        return _orphans(conn, place.cron_database)
    try:
        with _cron_connection(conn, place.cron_database) as cron:
            return _orphans(cron, place.cron_database)
    except (psycopg.OperationalError, ConnectError):
        return None


def _orphans(cron: psycopg.Connection, cron_database: str) -> list[OrphanJob] | None:
    try:
        with cron.transaction():
            rows = cron.execute(_ORPHANS).fetchall()
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return None  # pg_cron not created there, or not ours to read
    return [OrphanJob(jobid, name, database, cron_database) for jobid, name, database in rows]


def unschedule_database(server: psycopg.Connection, database: str) -> int:
    """Before `database` is dropped: remove its pg_cron jobs and pgops' jobs for it (with their history), which
    pg_cron would otherwise fail every minute, forever. `server` is any connection of a role that may; returns
    how many jobs went. Nothing to do without pg_cron."""
    place = locate(server)
    if place is None or place.cron_database is None or place.cron_database == database:
        return 0
    ours = [f"pgops-refresh:{database}", f"pgops-refresh-history:{database}"]
    with contextlib.ExitStack() as stack:
        cron = server
        if place.cron_database != place.database:
            cron = stack.enter_context(_cron_connection(server, place.cron_database))
        try:
            with cron.transaction():
                jobs = [
                    row[0]
                    for row in cron.execute(
                        "SELECT jobid FROM cron.job WHERE database = %s OR jobname = ANY(%s)", (database, ours)
                    )
                ]
                cron.execute("DELETE FROM cron.job_run_details WHERE jobid = ANY(%s)", (jobs,))
                cron.execute("SELECT cron.unschedule(jobid) FROM unnest(%s::bigint[]) AS jobid", (jobs,))
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return 0
    return len(jobs)


def offline_unschedule_sql() -> str:
    """For `alembic downgrade --sql`: remove this database's jobs when pg_cron lives here."""
    return """DO $pgops$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM cron.unschedule(jobid) FROM cron.job
        WHERE jobname IN ('pgops-refresh:' || current_database(), 'pgops-refresh-history:' || current_database());
    END IF;
END
$pgops$;"""
