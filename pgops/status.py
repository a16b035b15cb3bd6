"""`pgops status`: is this database ready for pgops, and what would each job lack?"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgops import replication
from pgops.config import Settings, StatusSettings, Target
from pgops.errors import Level, worst
from pgops.migrate import head_revision, installed_revision
from pgops.output import human_bytes, human_duration
from pgops.progress import QUIET, Progress
from pgops.refresh import cron
from pgops.resources import read_sql
from pgops.sqltext import literal

OK, WARNING, CRITICAL = Level.OK, Level.WARNING, Level.CRITICAL
DROP_SLOT = sql.SQL("SELECT pg_drop_replication_slot({})")


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str


@dataclass(frozen=True)
class Status:
    server: str
    database: str
    user: str
    checks: list[Check]

    @property
    def outcome(self) -> Level:
        return worst(check.level for check in self.checks)

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code


@dataclass(frozen=True)
class Plan:
    """What the checks are judged by; `peers` (the other targets) that are this primary's standbys are asked
    which of their sessions holds the xmin their feedback reports."""

    settings: Settings
    peers: tuple[Target, ...] = ()


def prepare(conn: psycopg.Connection, settings: Settings) -> Plan:
    return Plan(settings)


def run(conn: psycopg.Connection, plan: Plan, progress: Progress = QUIET) -> Status:
    """The checks of the server `conn` is open to: a handful of reads, nothing to report progress of."""
    settings, peers = plan.settings, plan.peers
    cur = conn.execute(read_sql("status/overview.sql"))
    row = dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))
    row["pg_stat_statements_usable"] = _pg_stat_statements_usable(conn, row)
    row["orphaned_jobs"] = cron.orphaned_jobs(conn)
    found = _replication(conn, row["in_recovery"])
    if peers and any(standby["feedback_xmin"] is not None for standby in found.get("standbys") or []):
        near = replication.holders_of(conn, peers, settings)
        for standby in found["standbys"]:
            standby["holder"] = replication.holder_of(standby["application_name"], standby["feedback_xmin"], near)
    checks = evaluate(row, installed_revision(conn), head_revision(settings))
    checks += evaluate_replication(found, settings.status, settings.pool_report.xmin_age)
    return Status(server=row["server_version"], database=row["database"], user=row["user"], checks=checks)


def _replication(conn: psycopg.Connection, in_recovery: bool) -> dict:
    """What the server says of its replication: its role, its standbys (a primary) or its upstream (a standby),
    and its slots, each inactive one with the statement that drops it."""
    cur = conn.cursor(row_factory=dict_row)
    found: dict = {"standby": in_recovery}
    if in_recovery:
        found["upstream"] = cur.execute(read_sql("status/standby.sql")).fetchone()
    else:
        found["standbys"] = cur.execute(read_sql("status/standbys.sql")).fetchall()
    found["slots"] = cur.execute(read_sql("status/slots.sql")).fetchall()
    for slot in found["slots"]:
        slot["drop"] = DROP_SLOT.format(literal(slot["slot_name"])).as_string(conn)
    return found


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


def _over(value: float | None, warning: float, critical: float) -> Level:
    if value is None:
        return OK
    return CRITICAL if value >= critical else WARNING if value >= warning else OK


def _lag(lag_bytes: int | None, lag_seconds: float | None) -> str:
    if lag_bytes is None and lag_seconds is None:
        return "replay lag unknown"  # no WAL received yet, or a role without pg_monitor
    seconds = human_duration(lag_seconds or 0.0)
    return f"replay lag {human_bytes(lag_bytes) or 'unknown'}, {seconds}"


def evaluate_replication(found: dict, limits: StatusSettings, xmin_age: int) -> list[Check]:
    """Pure: the role, each standby's lag and the xmin its feedback holds, and each slot's retained WAL."""
    lag_limits = (limits.replay_lag_warning.total_seconds(), limits.replay_lag_critical.total_seconds())
    checks = []
    if found["standby"]:
        upstream = found.get("upstream") or {}
        source = (
            f"streaming from {upstream['sender_host']}:{upstream['sender_port']} ({upstream['receiver_status']})"
            if upstream.get("receiver_status")
            else "not streaming (no WAL receiver: archive recovery, or the primary is unreachable)"
        )
        lag = _lag(upstream.get("replay_lag_bytes"), upstream.get("replay_lag_seconds"))
        level = _over(upstream.get("replay_lag_seconds"), *lag_limits)
        checks.append(Check("role", level, f"standby (read-only), {source}, {lag}"))
    else:
        standbys = found.get("standbys") or []
        checks.append(Check("role", OK, f"primary with {len(standbys)} standby{'s' * (len(standbys) != 1)}"))
        for standby in standbys:
            name = standby["application_name"] or f"WAL sender {standby['pid']}"
            where = f" at {standby['client_addr']}" if standby["client_addr"] else ""
            via = f", slot {standby['slot_name']}" if standby["slot_name"] else ""
            if standby["state"] is None:  # PostgreSQL shows a WAL sender's columns to pg_read_all_stats only
                detail = f"{name}{where}: its state and lag need pg_monitor"
            else:
                detail = f"{name}{where}: {standby['state']} ({standby['sync_state']}{via}), " + _lag(
                    standby["replay_lag_bytes"], standby["replay_lag_seconds"]
                )
            checks.append(Check("standby", _over(standby["replay_lag_seconds"], *lag_limits), detail))
            if standby["feedback_xmin"] is not None:
                # hot_standby_feedback: the standby's oldest snapshot keeps the primary's vacuum from removing rows
                age = standby["feedback_xmin_age"]
                holder = standby.get("holder")  # read on the standby, when it is a target
                fix = ": end the standby's long query or transaction" if age >= xmin_age else ""
                if holder is not None and holder.pid is not None and age >= xmin_age:
                    fix = f": end it there (SELECT pg_terminate_backend({holder.pid}))"
                checks.append(
                    Check(
                        "standby xmin",
                        WARNING if age >= xmin_age else OK,
                        f"{name} holds the primary's xmin back by {age} transactions (hot_standby_feedback, xmin "
                        f"{standby['feedback_xmin']}): vacuum keeps rows deleted since"
                        + (f"; the oldest snapshot is {holder.describe()}" if holder is not None else "")
                        + fix,
                    )
                )
    for slot in found.get("slots") or []:
        retained = slot["retained_bytes"]
        level = _over(retained, limits.slot_wal_warning, limits.slot_wal_critical)
        kept = f"retains {human_bytes(retained) if retained is not None else 'no'} WAL"
        if slot["wal_status"] == "lost":
            kept = "lost the WAL it needed (past max_slot_wal_keep_size)"
        xmin = ""
        if slot["xmin_age"] is not None:
            xmin = f", holds xmin back by {slot['xmin_age']} transactions"
            level = worst((level, WARNING if slot["xmin_age"] >= xmin_age else OK))
        kind = slot["slot_type"] + (f" in database {slot['database']}" if slot["database"] else "")
        if slot["active"]:
            detail = f"{slot['slot_name']} ({kind}): active (pid {slot['active_pid']}), {kept}{xmin}"
        else:
            detail = (
                f"{slot['slot_name']} ({kind}): inactive, {kept}{xmin}, until a standby uses it again or it is "
                f"dropped: {slot['drop']}"
            )
        checks.append(Check("replication slot", level, detail))
    return checks
