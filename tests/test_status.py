import json

import psycopg
import pytest
from psycopg import sql

from pgops import migrate, status
from pgops.config import load_settings
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


@pytest.mark.needs_pg_cron
def test_status_lists_pgops_jobs_of_a_dropped_database_until_unscheduled(pg_server, dbname, dsn, cli):
    """What a user gets who drops a database that pgops had migrated: pg_cron fails its jobs every minute."""
    gone = create_database(pg_server, "pgops_gone")
    migrate.upgrade(pg_server.database_dsn(gone), load_settings(env={}, dsn=pg_server.database_dsn(gone)))
    with psycopg.connect(pg_server.dsn, autocommit=True) as server:
        server.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(gone)))  # jobs stay behind
    try:
        result = cli("--dsn", dsn, "status", "--format", "json")
        orphans = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "pg_cron job" and gone in c["detail"]]
        assert [c["detail"].split(" (job ")[0] for c in orphans] == [
            f"pgops-refresh:{gone}",
            f"pgops-refresh-history:{gone}",
        ]
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
    migrate.upgrade(pg_server.database_dsn(name), load_settings(env={}, dsn=pg_server.database_dsn(name)))
    with psycopg.connect(pg_server.cron_dsn, autocommit=True) as cron_conn:
        other = cron_conn.execute(
            "SELECT cron.schedule_in_database(%s, '* * * * *', 'SELECT 1', %s)", (f"app-job-{name}", name)
        ).fetchone()[0]
        jobs = "SELECT count(*) FROM cron.job WHERE database = %s OR jobname LIKE %s"
        assert cron_conn.execute(jobs, (name, f"%:{name}")).fetchone()[0] == 3  # pgops' two and the app's own
        drop_database(pg_server, name)
        assert cron_conn.execute(jobs, (name, f"%:{name}")).fetchone()[0] == 0
        assert cron_conn.execute("SELECT count(*) FROM cron.job WHERE jobid = %s", (other,)).fetchone()[0] == 0
