import json
import re
import time

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgops import migrate, status
from pgops.config import StatusSettings, load_settings
from pgops.errors import EXIT_CRITICAL, EXIT_WARNING
from pgops.refresh import cron
from tests.conftest import create_database, drop_database

ROW = {
    "server_version": "15.18",
    "database": "app",
    "user": "ops",
    "superuser": False,
    "pg_monitor": True,
    "preload": "pg_stat_statements,pg_cron",
    "cron_database": "postgres",
    "reads_all_settings": True,
    "extensions": {"pg_stat_statements": True, "pg_cron": False, "hypopg": True},
    "pg_stat_statements_usable": True,
}


def levels(checks):
    return {c.name: c.level for c in checks}


def test_evaluate_all_good():
    checks = status.evaluate(ROW, "0001", "0001")
    assert set(levels(checks).values()) == {status.OK}


def test_evaluate_names_the_fix():
    row = {**ROW, "pg_monitor": False, "pg_stat_statements_usable": False, "extensions": {"pg_stat_statements": True}}
    checks = {c.name: c for c in status.evaluate(row, "0001", "0002")}
    assert checks["pgops schema"].level == status.WARNING and "pgops migrate" in checks["pgops schema"].detail
    assert "GRANT pg_monitor TO ops" in checks["privileges"].detail
    assert "shared_preload_libraries" in checks["pg_stat_statements"].detail
    assert checks["pg_cron"].level == status.OK
    assert "postgresql-NN-hypopg" in checks["hypopg"].detail


def test_status_on_a_real_database_as_a_plain_role(pg_server, conn, dbname, cli):
    conn.execute("DROP ROLE IF EXISTS pgops_status_probe")
    conn.execute("CREATE ROLE pgops_status_probe LOGIN")
    try:
        result = cli("--dsn", pg_server.database_dsn(dbname, user="pgops_status_probe"), "status", "--format", "json")
        report = json.loads(result.stdout)
        checks = {c["name"]: c for c in report["checks"]}
        assert report["user"] == "pgops_status_probe" and report["database"] == dbname
        assert checks["pgops schema"]["level"] == "critical"
        assert checks["privileges"]["level"] == "warning"
        assert "GRANT pg_monitor TO pgops_status_probe" in checks["privileges"]["detail"]
        if "hypopg" in pg_server.extensions:
            assert checks["hypopg"]["level"] == "ok"
        else:  # the package of this server's own major
            major = pg_server.version_num // 10000
            assert checks["hypopg"]["level"] == "warning"
            assert f"postgresql-{major}-hypopg" in checks["hypopg"]["detail"]
        assert result.exit_code == report["exit_code"] == EXIT_CRITICAL
        conn.execute("GRANT pg_monitor TO pgops_status_probe")
        table = cli("--dsn", pg_server.database_dsn(dbname, user="pgops_status_probe"), "status")
        assert "has pg_monitor" in table.stdout and table.exit_code == EXIT_CRITICAL
        assert "[/]" not in table.stdout and "│ critical │" in table.stdout  # the state styled, not its markup
        if "pg_cron" in pg_server.extensions:
            assert "jobs live in database postgres" in table.stdout
        else:
            assert "not loaded: the daemon does the scheduled work" in table.stdout
    finally:
        conn.execute("DROP OWNED BY pgops_status_probe")
        conn.execute("DROP ROLE pgops_status_probe")


def test_exit_code_order():
    warn = status.Status("15", "db", "u", [status.Check("a", status.WARNING, "")])
    assert warn.exit_code == EXIT_WARNING


def test_evaluate_warns_of_each_job_of_a_dropped_database_with_its_unschedule():
    orphans = [
        cron.OrphanJob(41, "pgops-refresh:gone", "gone", "postgres"),
        cron.OrphanJob(42, "pgops-refresh-history:gone", "gone", "postgres"),
    ]
    checks = [c for c in status.evaluate({**ROW, "orphaned_jobs": orphans}, "0001", "0001") if c.name == "pg_cron job"]
    assert [c.level for c in checks] == [status.WARNING, status.WARNING]
    assert checks[0].detail.startswith("pgops-refresh:gone (job 41) is for database gone, which no longer exists")
    assert [c.detail.rsplit(", ", 1)[-1] for c in checks] == [
        "run SELECT cron.unschedule(41)",
        "run SELECT cron.unschedule(42)",
    ]
    assert checks[1].detail.endswith("in database postgres, run SELECT cron.unschedule(42)")


def _migrate_and_schedule(url: str) -> None:
    """What `pgops migrate` does: the schema, then pgops' pg_cron job (`pgops refresh schedule`)."""
    settings = load_settings(env={}, dsn=url)
    migrate.upgrade(url, settings)
    with psycopg.connect(url, autocommit=True) as conn:
        assert cron.schedule(conn, settings.refresh).scheduled


@pytest.mark.needs_pg_cron
def test_status_lists_pgops_jobs_of_a_dropped_database_until_unscheduled(pg_server, dbname, dsn, cli):
    """What a user gets who drops a database that pgops had migrated: pg_cron fails its jobs every minute."""
    gone = create_database(pg_server, "pgops_gone")
    _migrate_and_schedule(pg_server.database_dsn(gone))
    with psycopg.connect(pg_server.dsn, autocommit=True) as server:
        server.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(gone)))  # jobs stay behind
    try:
        result = cli("--dsn", dsn, "status", "--format", "json")
        orphans = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "pg_cron job" and gone in c["detail"]]
        assert [c["detail"].split(" (job ")[0] for c in orphans] == [f"pgops-refresh:{gone}"]
        assert all(c["level"] == "warning" and "cron.unschedule(" in c["detail"] for c in orphans)
        assert result.exit_code >= EXIT_WARNING
        with psycopg.connect(pg_server.cron_dsn, autocommit=True) as cron_conn:
            for check in orphans:  # the fix each warning ends with
                cron_conn.execute(check["detail"].rsplit(", run ", 1)[1])
        again = json.loads(cli("--dsn", dsn, "status", "--format", "json").stdout)
        assert [c for c in again["checks"] if c["name"] == "pg_cron job" and gone in c["detail"]] == []
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as server:
            cron.unschedule_database(server, gone)


@pytest.mark.needs_pg_cron
def test_dropping_a_test_database_unschedules_its_jobs(pg_server):
    """The fixtures' drop (pgops.sandbox.drop_database) removes the database's pg_cron jobs first."""
    name = create_database(pg_server, "pgops_cron")
    _migrate_and_schedule(pg_server.database_dsn(name))
    with psycopg.connect(pg_server.cron_dsn, autocommit=True) as cron_conn:
        other = cron_conn.execute(
            "SELECT cron.schedule_in_database(%s, '* * * * *', 'SELECT 1', %s)", (f"app-job-{name}", name)
        ).fetchone()[0]
        jobs = "SELECT count(*) FROM cron.job WHERE database = %s OR jobname LIKE %s"
        assert cron_conn.execute(jobs, (name, f"%:{name}")).fetchone()[0] == 2  # pgops' and the app's own
        drop_database(pg_server, name)
        assert cron_conn.execute(jobs, (name, f"%:{name}")).fetchone()[0] == 0
        assert cron_conn.execute("SELECT count(*) FROM cron.job WHERE jobid = %s", (other,)).fetchone()[0] == 0


def test_evaluate_replication_levels_from_the_thresholds():
    limits = StatusSettings()
    standby = {
        "pid": 7, "application_name": "", "client_addr": None, "state": "streaming", "sync_state": "async",
        "slot_name": "s1", "replay_lag_bytes": 5 * 1024**2, "replay_lag_seconds": 700.0,
        "feedback_xmin": None, "feedback_xmin_age": None,
    }  # fmt: skip
    slot = {
        "slot_name": "s2", "slot_type": "logical", "database": "app", "active": False, "active_pid": None,
        "wal_status": "extended", "retained_bytes": 2 * 1024**3, "xmin_age": None, "drop": "DROP...",
    }  # fmt: skip
    checks = status.evaluate_replication({"standby": False, "standbys": [standby], "slots": [slot]}, limits, 10**6)
    assert [(c.name, c.level) for c in checks] == [
        ("role", "ok"),
        ("standby", "critical"),  # 700 s behind, over the 10 min default
        ("replication slot", "warning"),  # 2GB kept, over the 1GB default
    ]
    assert checks[1].detail == "WAL sender 7: streaming (async, slot s1), replay lag 5.0 MB, 11.7m"
    assert checks[2].detail.startswith("s2 (logical in database app): inactive, retains 2.0 GB WAL,")
    lost = status.evaluate_replication({"standby": False, "slots": [{**slot, "wal_status": "lost"}]}, limits, 10**6)
    assert "lost the WAL it needed" in lost[1].detail
    unknown = status.evaluate_replication({"standby": True, "upstream": None, "slots": []}, limits, 10**6)
    assert unknown[0].detail.startswith("standby (read-only), not streaming (no WAL receiver")


# -- replication: a primary and a streaming replica (the session's `replicas`) ----------------------------------


def _report(cli, url: str) -> tuple[int, list[dict]]:
    result = cli("--dsn", url, "status", "--format", "json")
    return result.exit_code, json.loads(result.stdout)["checks"]


def _named(checks: list[dict], name: str) -> list[dict]:
    return [c for c in checks if c["name"] == name]


def test_status_on_a_primary_lists_each_standby_with_its_replay_lag(replicas, cli):
    _, checks = _report(cli, replicas.url())
    assert _named(checks, "role") == [{"name": "role", "level": "ok", "detail": "primary with 1 standby"}]
    [standby] = _named(checks, "standby")
    assert standby["level"] == "ok"
    assert standby["detail"].startswith("replica-1 at 127.0.0.1: streaming (async), replay lag ")
    with psycopg.connect(replicas.url(), autocommit=True) as conn:
        conn.execute("CREATE ROLE plain LOGIN")
    _, checks = _report(cli, make_conninfo(replicas.url(), user="plain"))
    assert [c["detail"] for c in _named(checks, "standby")] == ["replica-1: its state and lag need pg_monitor"]


def test_status_on_a_replica_says_it_is_a_standby_with_its_replay_lag(replicas, cli):
    _, checks = _report(cli, replicas.url(replica=1))
    [role] = _named(checks, "role")
    primary_port = replicas.url().rsplit(":", 1)[1].split("/")[0]
    assert role["level"] == "ok"
    assert role["detail"].startswith(f"standby (read-only), streaming from 127.0.0.1:{primary_port} (streaming), ")
    assert "replay lag " in role["detail"]
    assert _named(checks, "standby") == []


def test_an_inactive_slot_is_reported_with_the_wal_it_retains_and_its_drop(replicas, cli, monkeypatch):
    with psycopg.connect(replicas.url(), autocommit=True) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot('pgops_test_slot', true)")  # reserves WAL now
        try:
            conn.execute("CREATE TABLE filler AS SELECT generate_series(1, 10000) AS n")  # WAL the slot keeps
            conn.execute("DROP TABLE filler")
            _, checks = _report(cli, replicas.url())
            [slot] = [c for c in _named(checks, "replication slot") if c["detail"].startswith("pgops_test_slot ")]
            assert slot["level"] == "ok"  # under the 1GB default
            assert re.fullmatch(
                r"pgops_test_slot \(physical\): inactive, retains [\d.]+ [kM]B WAL, until a standby uses it again or "
                r"it is dropped: SELECT pg_drop_replication_slot\('pgops_test_slot'\)",
                slot["detail"],
            ), slot["detail"]

            monkeypatch.setenv("PGOPS_STATUS_SLOT_WAL_WARNING", "1kB")
            code, checks = _report(cli, replicas.url())
            assert [c["level"] for c in _named(checks, "replication slot")] == ["warning"]
            monkeypatch.setenv("PGOPS_STATUS_SLOT_WAL_CRITICAL", "2kB")
            code, checks = _report(cli, replicas.url())
            assert [c["level"] for c in _named(checks, "replication slot")] == ["critical"] and code == EXIT_CRITICAL

            conn.execute(slot["detail"].rsplit(": ", 1)[1])  # the fix the check ends with
            assert _named(_report(cli, replicas.url())[1], "replication slot") == []
        finally:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active")


def test_the_standby_holding_the_primarys_xmin_is_named(replicas, cli, monkeypatch):
    """hot_standby_feedback: a snapshot open on the replica keeps the primary's vacuum from removing rows."""
    with psycopg.connect(replicas.url(replica=1), autocommit=True) as replica:
        replica.execute("ALTER SYSTEM SET hot_standby_feedback = on")
        replica.execute("ALTER SYSTEM SET wal_receiver_status_interval = '1s'")  # feedback every second
        replica.execute("SELECT pg_reload_conf()")
        try:
            with psycopg.connect(replicas.url(replica=1)) as reader:  # a long transaction on the replica
                reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                reader.execute("SELECT count(*) FROM pg_class").fetchone()
                with psycopg.connect(replicas.url(), autocommit=True) as primary:
                    for _ in range(5):
                        primary.execute("SELECT txid_current()")  # transactions the held xmin falls behind
                monkeypatch.setenv("PGOPS_POOL_REPORT_XMIN_AGE", "5")
                deadline = time.monotonic() + 30
                while True:
                    held = _named(_report(cli, replicas.url())[1], "standby xmin")
                    if held and held[0]["level"] == "warning":
                        break
                    assert time.monotonic() < deadline, held
                    time.sleep(0.2)
                assert re.fullmatch(
                    r"replica-1 holds the primary's xmin back by \d+ transactions \(hot_standby_feedback, xmin \d+\): "
                    r"vacuum keeps rows deleted since: end the standby's long query or transaction",
                    held[0]["detail"],
                ), held[0]["detail"]
        finally:
            replica.execute("ALTER SYSTEM RESET hot_standby_feedback")
            replica.execute("ALTER SYSTEM RESET wal_receiver_status_interval")
            replica.execute("SELECT pg_reload_conf()")
