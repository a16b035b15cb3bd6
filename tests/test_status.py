import json

from pgops import status
from pgops.errors import EXIT_CRITICAL, EXIT_WARNING

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
