"""pgops' migrations: upgrade → downgrade → upgrade with and without pg_cron, through Alembic's command API with
the top-level alembic.ini and through `pgops migrate`; the offline script; and pg_cron running the job itself."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from psycopg import sql

from pgops import migrate
from pgops.errors import PgopsError
from pgops.refresh import process, queue, watch
from tests.refresh.conftest import BASE_SCHEMA, FAST, differs_from_query, settings_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def alembic_ini() -> Iterator[callable]:
    """`alembic -x dsn=... ` with the repository's alembic.ini; its logging set-up is undone afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def config(dsn: str) -> Config:
        cfg = Config(str(ROOT / "alembic.ini"))
        cfg.cmd_opts = argparse.Namespace(x=[f"dsn={dsn}"])
        return cfg

    yield config
    root.handlers[:] = handlers
    root.setLevel(level)


def _jobs(pg_server, dbname: str) -> list[tuple[str, str, str]]:
    if "pg_cron" not in pg_server.extensions:
        return []
    with psycopg.connect(pg_server.cron_dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT jobname, database, command FROM cron.job WHERE jobname LIKE %s ORDER BY jobname",
            (f"%:{dbname}",),
        ).fetchall()


def _installed_objects(conn) -> tuple[bool, int, int]:
    """(pgops schema exists, pgops triggers on user tables, views' trigger functions)."""
    return conn.execute(
        "SELECT to_regnamespace('pgops') IS NOT NULL, "
        "(SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
        " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgops'), "
        "(SELECT count(*) FROM pg_proc WHERE proname LIKE 'refresh\\_mark\\_%%')"
    ).fetchone()


def test_refreshing_on_a_schema_older_than_pgops_says_to_migrate(dsn, conn, alembic_ini, cli):
    """Before 0004 there is no processor to call: one line that names the fix, not a refresh failure."""
    config = alembic_ini(dsn)
    command.upgrade(config, "head")
    conn.execute(BASE_SCHEMA)
    watch.watch(conn, "fund_stats", FAST)
    command.downgrade(config, "0003")
    result = cli("--dsn", dsn, "refresh", "now", "fund_stats")
    assert result.exit_code == 3, (result.stdout, result.stderr)
    assert "run `pgops migrate`" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    with pytest.raises(PgopsError, match="run `pgops migrate`"):
        process.process_due(conn, FAST)  # what the daemon calls
    command.upgrade(config, "head")
    assert cli("--dsn", dsn, "refresh", "now", "fund_stats").exit_code == 0


@pytest.mark.needs_pg_cron
def test_upgrade_downgrade_upgrade_with_pg_cron(pg_server, dbname, dsn, conn, alembic_ini, cli):
    config = alembic_ini(dsn)
    command.upgrade(config, "head")
    assert migrate.current_revision(dsn, settings_for(dsn)) == "0004"
    assert _jobs(pg_server, dbname) == []  # the job is `pgops refresh schedule`'s, not a migration's
    scheduled = cli("--dsn", dsn, "refresh", "schedule")
    assert scheduled.exit_code == 0, scheduled.stderr
    assert _jobs(pg_server, dbname) == [(f"pgops-refresh:{dbname}", dbname, "CALL pgops.process_due('5 seconds')")]

    conn.execute(BASE_SCHEMA)
    watch.watch(conn, "fund_stats", FAST)
    assert _installed_objects(conn) == (True, 2, 1)

    command.downgrade(config, "base")
    assert _installed_objects(conn) == (False, 0, 0)
    assert _jobs(pg_server, dbname) == []
    conn.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 1)")  # the application writes on, untouched

    upgraded = cli("--dsn", dsn, "migrate")
    assert upgraded.exit_code == 0, upgraded.stderr
    assert "not installed → 0004" in upgraded.stderr and "scheduled" in upgraded.stderr
    assert len(_jobs(pg_server, dbname)) == 1
    downgraded = cli("--dsn", dsn, "migrate", "--downgrade", "base")
    assert downgraded.exit_code == 0 and "0004 → not installed" in downgraded.stderr
    assert _jobs(pg_server, dbname) == []


def test_upgrade_downgrade_upgrade_without_pg_cron(pg_server, dbname, conn, alembic_ini, cli):
    """On a server with pg_cron, simulated: this ordinary role may not use it (it can't read cron.database_name, has
    no USAGE on schema cron nor EXECUTE on cron.schedule_in_database) — to pgops the same as no pg_cron. On a
    server without pg_cron, the real thing."""
    role = f"pgops_app_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)))
    conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(dbname), sql.Identifier(role)))
    role_dsn = pg_server.database_dsn(dbname, user=role, password="pw")
    try:
        upgraded = cli("--dsn", role_dsn, "migrate")
        assert upgraded.exit_code == 0, upgraded.stderr
        if "pg_cron" in pg_server.extensions:
            assert f"role {role} may not schedule pg_cron jobs" in upgraded.stderr, upgraded.stderr
        else:
            assert "pg_cron is not loaded on this server" in upgraded.stderr, upgraded.stderr
        assert "pgops daemon" in upgraded.stderr
        assert _jobs(pg_server, dbname) == []

        with psycopg.connect(role_dsn, autocommit=True) as as_role:
            as_role.execute(BASE_SCHEMA)
            watch.watch(as_role, "fund_stats", FAST)
            command.downgrade(alembic_ini(role_dsn), "base")
            assert _installed_objects(as_role) == (False, 0, 0)
            command.upgrade(alembic_ini(role_dsn), "head")
            assert migrate.current_revision(role_dsn, settings_for(role_dsn)) == "0004"
            assert _jobs(pg_server, dbname) == []
            watch.watch(as_role, "fund_stats", FAST)
            assert [v.name for v in queue.watched_views(as_role)] == ["public.fund_stats"]
            command.downgrade(alembic_ini(role_dsn), "base")
    finally:
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _write_path(conn) -> tuple[dict[str, list[str]], list[int], list[int]]:
    """(table → the functions its pgops triggers call, with their arguments; views whose 0001 flag is up; views
    whose 0002 trigger function is the pending one)."""
    triggers: dict[str, list[str]] = {}
    for table, function in conn.execute(
        "SELECT t.tgrelid::regclass::text, p.proname || '(' || encode(t.tgargs, 'escape') || ')' "
        "FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'pgops' ORDER BY 1, 2"
    ).fetchall():
        triggers.setdefault(table, []).append(function.replace("\\000", ","))
    types = conn.execute(
        "SELECT coalesce(array_agg(substr(typname, 17)::integer ORDER BY 1), '{}') FROM pg_type "
        "WHERE typnamespace = 'pgops'::regnamespace AND typname LIKE 'refresh\\_pending\\_%'"
    ).fetchone()[0]
    functions = []
    if conn.execute("SELECT to_regprocedure('pgops.is_pending(integer)') IS NOT NULL").fetchone()[0]:
        functions = conn.execute(
            "SELECT coalesce(array_agg(view_id ORDER BY view_id), '{}') FROM pgops.refresh_views "
            "WHERE pgops.is_pending(view_id)"
        ).fetchone()[0]
    return triggers, types, functions


def _refresh_before_0004(conn, view: str) -> str:
    """`refresh now` as the processor did it before 0004 (no pgops.process_view()): pgops.refresh_view() forced,
    each attempt in its own transaction, again after 'flipped'."""
    for _ in range(3):
        with conn.transaction():
            outcome = conn.execute(
                "SELECT r.outcome FROM pgops.refresh_views v, pgops.refresh_view(v.view_id, true) r "
                "WHERE v.schema_name = 'public' AND v.view_name = %s",
                (view,),
            ).fetchone()[0]
        if outcome != "flipped":
            break
    return outcome


def test_0002_converts_an_installed_write_path_both_ways(dsn, conn, settings):
    """An install at 0001 with a pending view and a clean one: 0002 turns each view's flag into its trigger
    function's body in the same state (and one trigger per table and view), the downgrade turns it back."""
    migrate.upgrade(dsn, settings, "0001")
    conn.execute(BASE_SCHEMA)
    conn.execute("CREATE MATERIALIZED VIEW fund_names AS SELECT id, name FROM funds")
    conn.execute("CREATE UNIQUE INDEX ON fund_names (id)")
    stats = watch.watch(conn, "fund_stats", FAST)  # pending from the start
    names = watch.watch(conn, "fund_names", FAST)
    _refresh_before_0004(conn, "fund_names")  # clean: its writers mark
    stats_pair, names_pair = (f"{v.view_id},pgops.refresh_pending_{v.view_id}" for v in (stats, names))
    at_0001 = (
        {"funds": [f"mark_stale({stats_pair},{names_pair},)"], "trades": [f"mark_stale({stats_pair},)"]},
        [stats.view_id],
        [],
    )
    assert _write_path(conn) == at_0001

    migrate.upgrade(dsn, settings)
    assert migrate.current_revision(dsn, settings) == "0004"
    assert _write_path(conn) == (
        {"funds": [f"refresh_mark_{stats.view_id}()", f"refresh_mark_{names.view_id}()"],
         "trades": [f"refresh_mark_{stats.view_id}()"]},
        [],
        [stats.view_id],
    )  # fmt: skip
    conn.execute("INSERT INTO funds VALUES (6, 'fund 6')")
    assert conn.execute("SELECT array_agg(view_id) FROM pgops.refresh_marks").fetchone()[0] == [names.view_id]
    assert [o.outcome for o in process.process_due(conn, FAST)] == ["waiting", "waiting"]  # names is pending too

    migrate.downgrade(dsn, settings, "0001")
    assert migrate.current_revision(dsn, settings) == "0001"
    both = sorted([stats.view_id, names.view_id])
    assert _write_path(conn) == (at_0001[0], both, [])
    migrate.upgrade(dsn, settings)
    assert _write_path(conn)[2] == both
    migrate.downgrade(dsn, settings)
    assert _installed_objects(conn) == (False, 0, 0)


def _trigger_states(conn) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT t.tgrelid::regclass::text || ':' || p.proname, t.tgenabled::text FROM pg_trigger t "
            "JOIN pg_proc p ON p.oid = t.tgfoid WHERE p.pronamespace = 'pgops'::regnamespace ORDER BY 1"
        ).fetchall()
    )


def test_0003_keeps_watched_views_working_both_ways(dsn, conn, settings):
    """Views watched at 0002 (one pending, one clean) keep their flags through 0003, whose processor then disables
    the pending view's triggers; the downgrade enables them again, and 0002's processor loses no write."""
    migrate.upgrade(dsn, settings, "0002")
    conn.execute(BASE_SCHEMA)
    conn.execute("CREATE MATERIALIZED VIEW fund_names AS SELECT id, name FROM funds")
    conn.execute("CREATE UNIQUE INDEX ON fund_names (id)")
    slow = dataclasses.replace(FAST, debounce=timedelta(seconds=30), max_wait=timedelta(minutes=5))
    stats = watch.watch(conn, "fund_stats", slow)  # pending from the start
    names = watch.watch(conn, "fund_names", slow)
    _refresh_before_0004(conn, "fund_names")  # clean: its writers mark
    s, n = f"refresh_mark_{stats.view_id}", f"refresh_mark_{names.view_id}"
    enabled = {f"funds:{s}": "O", f"funds:{n}": "O", f"trades:{s}": "O"}
    assert _trigger_states(conn) == enabled and _write_path(conn)[2] == [stats.view_id]

    migrate.upgrade(dsn, settings)
    assert migrate.current_revision(dsn, settings) == "0004"
    assert _trigger_states(conn) == enabled and _write_path(conn)[2] == [stats.view_id]
    conn.execute("UPDATE funds SET name = 'renamed' WHERE id = 1")
    assert conn.execute("SELECT array_agg(view_id) FROM pgops.refresh_marks").fetchone()[0] == [names.view_id]
    assert [o.outcome for o in process.process_due(conn, slow)] == ["waiting", "waiting"]
    assert set(_trigger_states(conn).values()) == {"D"}
    conn.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 500)")  # no trigger runs: no mark

    migrate.downgrade(dsn, settings, "0002")
    assert migrate.current_revision(dsn, settings) == "0002"
    assert _trigger_states(conn) == enabled and _write_path(conn)[2] == sorted([stats.view_id, names.view_id])
    for view in ("fund_stats", "fund_names"):
        assert _refresh_before_0004(conn, view) == process.REFRESHED
        assert differs_from_query(conn, f"public.{view}") == 0
    conn.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 501)")  # clean again under 0002: marks
    assert conn.execute("SELECT array_agg(view_id) FROM pgops.refresh_marks").fetchone()[0] == [stats.view_id]

    migrate.upgrade(dsn, settings)
    migrate.downgrade(dsn, settings)
    assert _installed_objects(conn) == (False, 0, 0)


def test_offline_script_is_reviewable_and_runs(pg_server, dsn, conn):
    settings = settings_for(dsn, dataclasses.replace(FAST, cron_schedule="*/5 * * * *"))
    script = migrate.upgrade_sql(settings)
    assert "%%" not in script and "$$;;" not in script
    for needle in ("CREATE TABLE pgops.refresh_views", "CREATE TABLE pgops.refresh_marks", "pgops.mark_stale()",
                   "CREATE PROCEDURE pgops.process_due", "pgops.alembic_version"):  # fmt: skip
        assert needle in script
    assert "`pgops refresh schedule` schedules the pg_cron job" in script and "cron.schedule" not in script
    conn.execute(script)
    assert migrate.current_revision(dsn, settings) == "0004"
    conn.execute(BASE_SCHEMA)
    assert conn.execute("SELECT pgops.watch('fund_stats')").fetchone()[0] == 1
    conn.execute(migrate.downgrade_sql(settings))
    assert conn.execute("SELECT to_regnamespace('pgops')").fetchone()[0] is None
    triggers = "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgrelid = 'trades'::regclass"
    assert conn.execute(triggers).fetchone()[0] == 0


def test_offline_downgrade_script_removes_the_job_where_pg_cron_lives(dsn):
    script = migrate.downgrade_sql(settings_for(dsn))
    assert "PERFORM cron.unschedule(jobid)" in script


@pytest.mark.slow
@pytest.mark.needs_pg_cron
def test_pg_cron_runs_the_job(pg_server, dbname, dsn, conn, cli):
    """pg_cron itself calls pgops.process_due() at the next minute tick (pg_cron 1.4: minute granularity)."""
    upgraded = cli("--dsn", dsn, "migrate")
    assert upgraded.exit_code == 0, upgraded.stderr
    try:
        conn.execute(BASE_SCHEMA)
        watch.watch(conn, "fund_stats", dataclasses.replace(FAST, debounce=timedelta(0), max_wait=timedelta(0)))
        conn.execute("INSERT INTO trades (fund_id, amount) VALUES (1, 1000)")
        assert differs_from_query(conn, "public.fund_stats") > 0
        job = f"pgops-refresh:{dbname}"
        runs: list[tuple[str, str]] = []
        deadline = time.monotonic() + 75
        with psycopg.connect(pg_server.cron_dsn, autocommit=True) as cron_conn:
            while time.monotonic() < deadline:
                runs = cron_conn.execute(
                    "SELECT status, return_message FROM cron.job_run_details WHERE jobid = "
                    "(SELECT jobid FROM cron.job WHERE jobname = %s) AND status IN ('succeeded', 'failed')",
                    (job,),
                ).fetchall()
                if runs:
                    break
                time.sleep(1)
            assert runs and runs[0][0] == "succeeded", runs
            (view,) = queue.watched_views(conn)
            assert view.refresh_count == 1 and view.stale_since is None
            assert differs_from_query(conn, "public.fund_stats") == 0

    finally:
        assert cli("--dsn", dsn, "migrate", "--downgrade", "base").exit_code == 0
    assert _jobs(pg_server, dbname) == []


@pytest.mark.needs_pg_cron
def test_a_schedule_this_pg_cron_refuses_is_one_line_naming_the_key(pg_server, dbname, dsn, tmp_path, cli):
    """`N seconds` loads (pg_cron 1.5+ takes it), but an older pg_cron refuses it: one line and exit 3, not a
    Python exception out of the migration, and not a silent fallback that leaves no job."""
    config = tmp_path / "pgops.toml"
    config.write_text('[refresh]\ncron_schedule = "30 seconds"\n')
    with psycopg.connect(pg_server.cron_dsn) as conn:
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]
    result = cli("--config", config, "--dsn", dsn, "migrate")
    if tuple(int(part) for part in version.split("-")[0].split(".")) >= (1, 5):
        assert result.exit_code == 0, result.stderr
        assert [job for job in _jobs(pg_server, dbname) if job[0].startswith("pgops-refresh:")]
        cli("--dsn", dsn, "migrate", "--downgrade", "base")
        return
    assert result.exit_code == 3 and "internal error" not in result.stderr
    installed, line = result.stderr.strip().splitlines()  # the schema is in; the job is what was refused
    assert installed == "pgops schema: not installed → 0004"
    assert line.startswith("pgops: error: refresh.cron_schedule: pg_cron refused '30 seconds'"), result.stderr
    assert _jobs(pg_server, dbname) == []
    assert cli("--dsn", dsn, "migrate", "--downgrade", "base").exit_code == 0


def test_a_migration_the_server_refuses_is_one_line_and_changes_nothing(pg_server, dbname, conn, cli):
    """A role that may not create the schema: one line naming the refusal, exit 3, no traceback, no schema."""
    role = f"pgops_plain_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)))
    try:
        result = cli("--dsn", pg_server.database_dsn(dbname, user=role, password="pw"), "migrate")
        assert result.exit_code == 3, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("pgops: error: migration failed, nothing changed: permission denied"), line
        assert conn.execute("SELECT to_regnamespace('pgops')").fetchone()[0] is None
    finally:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
