"""`pgops cleanup run|list` end to end: one-off policies, dry runs, ready-made policies, errors and exit codes."""

from __future__ import annotations

import contextlib
import json

import psycopg

from tests.cleanup.helpers import counts, make_items

ONE_OFF = ("cleanup", "run", "--table", "public.items", "--expired-column", "expires_at")


def test_dry_run_counts_shows_plan_warns_missing_index_and_deletes_nothing(cli, dsn, conn):
    make_items(conn, expired=100, live=20, index=False)
    result = cli("--dsn", dsn, *ONE_OFF, "--dry-run", "--format", "json")
    assert result.exit_code == 1, result.stderr  # a warning: no index supports the condition
    (report,) = json.loads(result.stdout)
    assert (report["status"], report["would_delete"], report["counted"]) == ("dry-run", 100, True)
    assert "LockRows" in report["plan"]
    (warning,) = report["warnings"]
    fix = warning.split("fix: ", 1)[1]
    assert fix == 'CREATE INDEX CONCURRENTLY ON "public"."items" ("expires_at");'
    assert counts(conn) == (100, 20)

    conn.execute(fix)  # the printed statement is the fix
    result = cli("--dsn", dsn, *ONE_OFF, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "would delete" in result.stdout and "100" in result.stdout
    assert "batch plan" in result.stdout and "LockRows" in result.stdout
    assert "warning" not in result.stderr


def test_run_prints_summary_and_json(cli, dsn, conn):
    make_items(conn, expired=300, live=20)
    result = cli(
        "--dsn", dsn, "cleanup", "run", "--table", "items", "--older-than", "expires_at=30m", "--batch-size", "40"
    )
    assert result.exit_code == 0, result.stderr
    assert "done" in result.stdout and "300" in result.stdout and "rows/s" in result.stdout
    assert counts(conn) == (0, 20)
    result = cli("--dsn", dsn, *ONE_OFF, "--format", "json")
    (report,) = json.loads(result.stdout)
    assert (report["status"], report["rows_deleted"], report["rows_left"]) == ("done", 0, 0)


def test_errors_are_one_line_with_exit_3_and_nothing_deleted(cli, dsn, conn):
    make_items(conn, expired=10, live=1)
    result = cli("--dsn", dsn, "cleanup", "run", "--table", "public.items", "--expired-column", "expires")
    assert result.exit_code == 3
    assert result.stderr.strip().count("\n") == 0
    assert "column expires does not exist in public.items; did you mean expires_at?" in result.stderr
    result = cli("--dsn", dsn, "cleanup", "run", "--table", "public.items", "--older-than", "expires_at=soon")
    assert result.exit_code == 3 and "--older-than expires_at=soon" in result.stderr
    result = cli("--dsn", dsn, "cleanup", "run", "nope")
    assert result.exit_code == 3 and "no cleanup policy nope (known: idempotency_keys" in result.stderr
    assert counts(conn) == (10, 1)


def test_a_bad_policy_stops_every_policy_before_any_deletes(cli, dsn, conn, tmp_path):
    make_items(conn, expired=10, live=1)
    config = tmp_path / "pgops.toml"
    config.write_text(
        "[cleanup]\nready_made = []\n"
        '[cleanup.policies.good]\ntable = "public.items"\nexpired_column = "expires_at"\n'
        '[cleanup.policies.bad]\ntable = "public.items"\nexpired_column = "note"\n'
    )
    result = cli("--config", config, "--dsn", dsn, "cleanup", "run")
    assert result.exit_code == 3 and "cleanup policy bad: column public.items.note is text" in result.stderr
    assert counts(conn) == (10, 1)


def test_ready_made_policies_clean_the_tables_that_exist(cli, pg_server, dsn, conn, tmp_path):
    conn.execute(
        "CREATE TABLE idempotency_keys (key text PRIMARY KEY, request_hash text, response jsonb, "
        "created_at timestamptz DEFAULT now(), expires_at timestamptz NOT NULL)"
    )
    conn.execute(
        "INSERT INTO idempotency_keys (key, expires_at) SELECT 'k' || g, now() + (g - 50) * interval '1 min' "
        "FROM generate_series(1, 100) g"
    )
    conn.execute(
        "CREATE TABLE request_logs (id bigserial PRIMARY KEY, tenant_id int, path text, status int, "
        "duration_ms float8, created_at timestamptz NOT NULL)"
    )
    conn.execute(
        "INSERT INTO request_logs (tenant_id, path, status, duration_ms, created_at) "
        "SELECT 1, '/', 200, 1.0, now() - g * interval '1 day' + interval '1 hour' FROM generate_series(1, 40) g"
    )
    # No sessions table here: the ready-made sessions policy is skipped, not an error.
    has_cron = "pg_cron" in pg_server.extensions  # without pg_cron, its ready-made policy is skipped too
    fake_job = 2_000_000_000 + conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    with contextlib.ExitStack() as stack:
        cron = stack.enter_context(psycopg.connect(pg_server.cron_dsn, autocommit=True)) if has_cron else None
        if cron:
            cron.execute(
                "INSERT INTO cron.job_run_details (jobid, command, status, start_time, end_time) "
                "SELECT %s, 'select 1', 'succeeded', now() - g * interval '1 day', now() - g * interval '1 day' "
                "+ interval '1 hour' FROM generate_series(1, 10) g",
                (fake_job,),
            )
            stack.callback(cron.execute, "DELETE FROM cron.job_run_details WHERE jobid = %s", (fake_job,))
        config = tmp_path / "pgops.toml"
        config.write_text('[cleanup]\nthrottle_pause = "100ms"\n')
        listed = cli("--config", config, "--dsn", dsn, "cleanup", "list", "--format", "json")
        assert list(json.loads(listed.stdout)) == [
            "idempotency_keys",
            "sessions",
            "request_logs",
            "cron_job_run_details",
        ]
        result = cli("--config", config, "--dsn", dsn, "cleanup", "run", "--format", "json")
        reports = {r["policy"]: r for r in json.loads(result.stdout)}
        assert reports["sessions"]["status"] == "skipped"
        assert reports["idempotency_keys"]["rows_deleted"] == 50
        assert reports["request_logs"]["rows_deleted"] == 10  # 31..40 days old
        if cron:
            assert reports["cron_job_run_details"]["status"] == "done"
            left = cron.execute("SELECT count(*) FROM cron.job_run_details WHERE jobid = %s", (fake_job,)).fetchone()
            assert left[0] == 7  # runs that ended within the last 7 days stay
        else:
            assert reports["cron_job_run_details"]["status"] == "skipped"
    assert conn.execute("SELECT count(*) FROM idempotency_keys WHERE expires_at < now()").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 50
    assert conn.execute("SELECT count(*) FROM request_logs").fetchone()[0] == 30


def test_ready_made_policies_on_the_demo_application(cli, dsn, conn):
    from pgops import demo

    demo.load_schema(conn)
    demo.generate(conn, scale=0.01, seed=0.5)
    expired = {
        table: conn.execute(
            psycopg.sql.SQL("SELECT count(*) FROM {} WHERE {} < now() - %s::interval").format(
                psycopg.sql.Identifier(table), psycopg.sql.Identifier(column)
            ),
            (age,),
        ).fetchone()[0]
        for table, column, age in [
            ("idempotency_keys", "expires_at", "0"),
            ("sessions", "expires_at", "0"),
            ("request_logs", "created_at", "30 days"),
        ]
    }
    assert all(expired.values()), expired  # the demo's data gives each policy work
    names = ("idempotency_keys", "sessions", "request_logs")
    dry = cli("--dsn", dsn, "cleanup", "run", *names, "--dry-run", "--format", "json")
    reports = {r["policy"]: r for r in json.loads(dry.stdout)}
    assert {name: reports[name]["would_delete"] for name in names} == expired
    # The demo leaves idempotency_keys (expires_at) unindexed on purpose: pgops says how to fix it.
    assert reports["idempotency_keys"]["warnings"][0].endswith(
        'CREATE INDEX CONCURRENTLY ON "public"."idempotency_keys" ("expires_at");'
    )
    assert dry.exit_code == 1
    run = cli("--dsn", dsn, "cleanup", "run", *names, "--format", "json")
    reports = {r["policy"]: r for r in json.loads(run.stdout)}
    assert {name: reports[name]["rows_deleted"] for name in names} == expired
    # Counted through the index where there is one; the unindexed table gets the planner's estimate.
    assert reports["sessions"]["rows_left"] == reports["request_logs"]["rows_left"] == 0


def test_a_where_that_leaves_its_parenthesis_is_refused_from_the_command_line_and_a_policy(cli, dsn, conn, tmp_path):
    make_items(conn, expired=10, live=5)
    result = cli("--dsn", dsn, *ONE_OFF, "--where", "true) OR (1=1")
    assert result.exit_code == 3 and result.stderr.count("\n") == 1
    assert "closes a parenthesis it did not open" in result.stderr
    config = tmp_path / "pgops.toml"
    config.write_text(
        '[cleanup]\nready_made = []\n[cleanup.policies.items]\ntable = "public.items"\nexpired_column = "expires_at"\n'
        "where = \"$a$)$a$ <> '' ) OR (true\"\n"
    )
    result = cli("--config", config, "--dsn", dsn, "cleanup", "run")
    assert result.exit_code == 3 and "cleanup policy items: where" in result.stderr
    assert counts(conn) == (10, 5)
