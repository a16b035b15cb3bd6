"""Several servers: a real primary with a real streaming replica (the session's `replicas`), named as targets in a
pgops.toml; `--target`/`--all` of the report commands, the standby session holding the primary's xmin, and index
advice merged from the replica's pg_stat_statements."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgops import sandbox
from pgops.advisor.model import Origin, Statement
from pgops.advisor.workload import LeftOut, StatementFilter, keep, merge
from pgops.config import PoolReportSettings
from pgops.errors import EXIT_CRITICAL, EXIT_ERROR, EXIT_WARNING
from pgops.pool_report.analyze import standby_usage
from pgops.replication import Holder, holder_of, receiver_name


@pytest.fixture(autouse=True)
def _no_url_in_the_environment(monkeypatch):
    """A URL in the environment would be the only target: these tests name theirs in a pgops.toml."""
    monkeypatch.delenv("PGOPS_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)


# -- pure parts ---------------------------------------------------------------------------------------------------


def test_merge_sums_each_statement_over_the_servers_and_keeps_each_ones_share():
    query = "SELECT * FROM t WHERE a = $1"
    primary = [Statement(query, calls=10, total_time_ms=5.0, rows=10, queryid=7, source="pg_stat_statements")]
    replica = [
        Statement(query.replace(" ", "  "), calls=90, total_time_ms=95.0, rows=90, queryid=7),  # same, respaced
        Statement("SELECT 1 FROM u", calls=3, total_time_ms=1.0, queryid=8),
    ]
    merged = merge([("primary", primary), ("replica-1", replica)])
    assert [(s.queryid, s.calls, s.total_time_ms, s.rows) for s in merged] == [(7, 100, 100.0, 100), (8, 3, 1.0, 0)]
    assert merged[0].origins == (Origin("primary", 10, 5.0), Origin("replica-1", 90, 95.0))
    assert merged[1].origins == (Origin("replica-1", 3, 1.0),)
    # two roles' rows of one statement on one server are one share of it
    twice = merge([("replica-1", [replica[1], replica[1]])])
    assert twice[0].origins == (Origin("replica-1", 6, 2.0),) and twice[0].calls == 6


def test_the_filters_apply_to_the_merged_sums():
    statements = [
        Statement("a", calls=100, total_time_ms=50.0),
        Statement("b", calls=2, total_time_ms=40.0),
        Statement("c", calls=50, total_time_ms=0.5),
        Statement("d", calls=1, total_time_ms=30.0),
    ]
    counts = LeftOut()
    kept = keep(statements, StatementFilter(min_calls=2, min_total_time_ms=1.0, top=1), counts)
    assert [s.query for s in kept] == ["a"]
    assert (counts.rare, counts.light, counts.past_top) == (1, 1, 1)


def test_a_standby_target_is_matched_by_its_snapshot_then_by_its_receiver_name():
    def holder(target, name, xmin):
        return Holder(target, name, 42, "report", "app", "active", xmin, 60.0, 60.0)

    found = [holder("r1", "replica-1", "900"), holder("r2", "replica-2", "950")]
    assert holder_of("replica-2", "900", found).target == "r1"  # the xmin it reports is r1's oldest snapshot
    assert holder_of("replica-2", "1000", found).target == "r2"  # else the application_name its receiver gives
    assert holder_of("walreceiver", "1000", found) is None
    assert receiver_name("host=a application_name=replica-1", "") == "replica-1"
    assert receiver_name("host=a", "east") == "east"
    assert receiver_name("host=a", "") == "walreceiver"
    assert receiver_name(None, "east") is None  # conninfo hidden: can't tell
    assert found[0].describe() == (
        "on target r1, pid 42 (application report, user app, active, transaction open 60.0s, query running 60.0s)"
    )


def test_a_standby_holding_xmin_past_the_threshold_is_a_warning():
    row = {
        "pid": 7, "application_name": "replica-1", "client_addr": "10.0.0.2", "state": "streaming",
        "replay_lag_bytes": 0, "replay_lag_seconds": None, "feedback_xmin": "900", "feedback_xmin_age": 5000,
    }  # fmt: skip
    settings = PoolReportSettings(xmin_age=1000)
    [usage] = standby_usage([row], {7: "on target r1, pid 42 (...)"}, settings)
    assert (usage.name, usage.level, usage.held_by) == ("replica-1", EXIT_WARNING, "on target r1, pid 42 (...)")
    [fine] = standby_usage([{**row, "feedback_xmin_age": 10}], {}, settings)
    assert fine.level == 0 and fine.held_by is None


def test_an_unknown_target_is_one_line_naming_the_known_ones(tmp_path, cli):
    config = tmp_path / "pgops.toml"
    config.write_text('[targets.primary]\nurl = "postgresql://h/a"\n[targets.replica-1]\nurl = "postgresql://h2/a"\n')
    for command in ("status", "pool-report", "workload", "advise-indexes"):
        result = cli("--config", config, command, "--target", "replica")
        assert result.exit_code == EXIT_ERROR, command
        assert result.stderr.strip() == f"pgops: error: {config}: no target named 'replica' (known: primary, replica-1)"
    result = cli("--config", config, "status", "--target", "primary", "--all")
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.strip() == "pgops: error: --target and --all can't be combined"


# -- a real primary and replica -----------------------------------------------------------------------------------


def _wait(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except psycopg.Error:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def app(replicas) -> Iterator[tuple[str, str]]:
    """A database of this test's own on the primary, with a table the replica can read: (primary, replica) URLs."""
    name = f"pgops_replica_{uuid.uuid4().hex[:10]}"
    sandbox.recreate_database(replicas.url(), name, ["pg_stat_statements"])
    primary, replica = replicas.url(name), replicas.url(name, replica=1)
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("CREATE TABLE reports (id bigint PRIMARY KEY, region int NOT NULL, body text)")
        conn.execute("INSERT INTO reports SELECT n, n % 2000, repeat('x', 40) FROM generate_series(1, 60000) n")
        conn.execute("ANALYZE reports")
    _wait(lambda: _count(replica, "SELECT count(*) FROM reports") == 60000, "the replica to replay the table")
    yield primary, replica
    sandbox.drop_database(replicas.url(), name)


def _count(url: str, query: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchone()[0]


def _config(tmp_path: Path, **targets: str) -> Path:
    path = tmp_path / "pgops.toml"
    path.write_text("".join(f'[targets.{name.replace("_", "-")}]\nurl = "{url}"\n' for name, url in targets.items()))
    return path


def test_advise_all_merges_the_reads_run_only_on_the_replica(app, tmp_path, cli):
    primary, replica = app
    with psycopg.connect(replica, autocommit=True) as conn:  # the reporting reads go to the replica only
        for region in range(40):
            conn.execute("SELECT id, body FROM reports WHERE region = %s", (region,)).fetchall()
    with psycopg.connect(primary, autocommit=True) as conn:  # the primary's workload filters on the key
        for key in range(40):
            conn.execute("SELECT body FROM reports WHERE id = %s", (key,)).fetchall()
    config = _config(tmp_path, primary=primary, replica_1=replica)

    alone = cli("--config", config, "advise-indexes", "--target", "primary")
    assert alone.exit_code == 0 and "CREATE INDEX" not in alone.stdout  # the primary's statements need none

    merged = cli("--config", config, "advise-indexes", "--all")
    assert merged.exit_code == EXIT_WARNING, merged.stderr
    assert re.search(r'^CREATE INDEX CONCURRENTLY IF NOT EXISTS "\w+" ON "public"\."reports" USING btree \("region"\)',
                     merged.stdout, re.MULTILINE), merged.stdout  # fmt: skip
    assert "-- sources: pg_stat_statements of primary, replica-1, merged" in merged.stdout
    assert re.search(r"^--    ran on: replica-1 40 calls, [\d.,]+\w+$", merged.stdout, re.MULTILINE), merged.stdout

    data = json.loads(cli("--config", config, "advise-indexes", "--all", "--format", "json").stdout)
    [recommendation] = data["recommendations"]
    [query] = recommendation["queries"]
    assert [(o["target"], o["calls"]) for o in query["origins"]] == [("replica-1", 40)]


def test_advise_all_refuses_two_clusters_or_two_databases(app, pg_server, dbname, tmp_path, cli):
    primary, replica = app
    other_cluster = pg_server.database_dsn(dbname)
    result = cli("--config", _config(tmp_path, primary=primary, other=other_cluster), "advise-indexes", "--all")
    assert result.exit_code == EXIT_ERROR
    assert re.fullmatch(
        r"pgops: error: targets primary and other are not one cluster \(system identifiers \d+ and \d+\): --all "
        r"merges a primary and its standbys; pass --target NAME for one server",
        result.stderr.strip(),
    ), result.stderr
    postgres = psycopg.conninfo.make_conninfo(primary, dbname="postgres")
    result = cli("--config", _config(tmp_path, primary=primary, replica_1=postgres), "advise-indexes", "--all")
    assert result.exit_code == EXIT_ERROR
    assert "are different databases of one cluster" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = cli("--config", _config(tmp_path, replica_1=replica), "advise-indexes", "--all")
    assert "no primary among the targets (replica-1 are standbys)" in result.stderr


def test_the_replica_session_holding_the_primarys_xmin_is_named(replicas, app, tmp_path, cli, monkeypatch):
    """hot_standby_feedback: a long transaction on the replica holds the primary's vacuum back; the primary's
    status and pool report name the replica, and (read there, a target) the session."""
    primary, replica = app
    config = _config(tmp_path, primary=primary, replica_1=replica)
    monkeypatch.setenv("PGOPS_POOL_REPORT_XMIN_AGE", "5")
    with psycopg.connect(replicas.url(replica=1), autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET hot_standby_feedback = on")
        admin.execute("ALTER SYSTEM SET wal_receiver_status_interval = '1s'")
        admin.execute("SELECT pg_reload_conf()")
        try:
            with psycopg.connect(replica, application_name="nightly-report") as reader:
                reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                reader.execute("SELECT count(*) FROM reports").fetchone()
                pid = reader.info.backend_pid
                with psycopg.connect(primary, autocommit=True) as conn:
                    for _ in range(6):
                        conn.execute("SELECT txid_current()")  # transactions the held xmin falls behind

                def held():
                    result = cli("--config", config, "status", "--target", "primary", "--format", "json")
                    checks = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "standby xmin"]
                    return checks if checks and checks[0]["level"] == "warning" else None

                [check] = _wait(held, "the replica's feedback to reach the primary")
                assert re.fullmatch(
                    r"replica-1 holds the primary's xmin back by \d+ transactions \(hot_standby_feedback, xmin \d+\): "
                    r"vacuum keeps rows deleted since; the oldest snapshot is on target replica-1, pid "
                    rf"{pid} \(application nightly-report, user postgres, idle in transaction, transaction open "
                    rf"[^)]+\): end it there \(SELECT pg_terminate_backend\({pid}\)\)",
                    check["detail"],
                ), check["detail"]

                result = cli("--config", config, "pool-report", "--target", "primary", "--format", "json")
                [standby] = json.loads(result.stdout)["standbys"]
                assert standby["name"] == "replica-1" and standby["level"] == EXIT_WARNING
                assert standby["held_by"].startswith(f"on target replica-1, pid {pid} (application nightly-report,")
                assert result.exit_code >= EXIT_WARNING
                view = cli("--config", config, "pool-report", "--target", "primary").stdout
                assert f"the oldest snapshot is on target replica-1, pid {pid}" in " ".join(view.split())

                # without the replica as a target, the primary still names the replica, not the session
                alone = cli("--dsn", primary, "status", "--format", "json")
                [check] = [c for c in json.loads(alone.stdout)["checks"] if c["name"] == "standby xmin"]
                assert "oldest snapshot" not in check["detail"] and check["detail"].startswith("replica-1 holds")
        finally:
            admin.execute("ALTER SYSTEM RESET hot_standby_feedback")
            admin.execute("ALTER SYSTEM RESET wal_receiver_status_interval")
            admin.execute("SELECT pg_reload_conf()")


def test_all_reports_both_servers_with_the_worst_exit_code(replicas, app, tmp_path, cli, monkeypatch):
    primary, replica = app
    config = _config(tmp_path, primary=primary, replica_1=replica)
    assert cli("--config", config, "migrate").exit_code == 0  # the schema replicates: only the slot differs
    _wait(lambda: _count(replica, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgops'"), "the schema")
    slot = f"pgops_gone_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))  # reserves WAL now
        try:
            conn.execute("CREATE TABLE filler AS SELECT generate_series(1, 10000) AS n")  # WAL the slot keeps
            monkeypatch.setenv("PGOPS_STATUS_SLOT_WAL_WARNING", "1kB")
            monkeypatch.setenv("PGOPS_STATUS_SLOT_WAL_CRITICAL", "2kB")

            result = cli("--config", config, "status", "--all", "--format", "json")
            data = json.loads(result.stdout)
            assert list(data) == ["primary", "replica-1"]
            roles = [(d["target"], d["role"]) for d in data.values()]
            assert roles == [("primary", "primary"), ("replica-1", "standby")]
            port = primary.rsplit(":", 1)[1].split("/")[0]
            assert data["primary"]["host"] == f"127.0.0.1:{port}/{primary.rsplit('/', 1)[1]} as postgres"
            [kept] = [c for c in data["primary"]["checks"] if c["detail"].startswith(f"{slot} ")]
            assert kept["level"] == "critical"
            assert re.fullmatch(
                rf"{slot} \(physical\): inactive, retains [\d.]+ [kM]B WAL, until a standby uses it again or it is "
                rf"dropped: SELECT pg_drop_replication_slot\('{slot}'\)",
                kept["detail"],
            ), kept["detail"]
            assert data["primary"]["exit_code"] == EXIT_CRITICAL and data["replica-1"]["exit_code"] == EXIT_WARNING
            assert result.exit_code == EXIT_CRITICAL  # the worst of the two

            view = cli("--config", config, "status", "--all")
            assert view.exit_code == EXIT_CRITICAL
            headings = [line for line in view.stdout.splitlines() if line.startswith(("primary:", "replica-1:"))]
            assert [h.split(" ─")[0] for h in headings] == [
                f"primary: primary, 127.0.0.1:{port}/{primary.rsplit('/', 1)[1]} as postgres",
                f"replica-1: standby, 127.0.0.1:{replica.rsplit(':', 1)[1].split('/')[0]}/"
                f"{replica.rsplit('/', 1)[1]} as postgres",
            ]
            assert "standby (read-only), streaming from" in " ".join(view.stdout.split())

            # the other report commands: a section per server, each with its role
            for command in ("pool-report", "workload"):
                result = cli("--config", config, command, "--all", "--format", "json")
                data = json.loads(result.stdout)
                assert [(name, d["role"]) for name, d in data.items()] == [
                    ("primary", "primary"), ("replica-1", "standby")
                ], command  # fmt: skip
                assert result.exit_code == max(d["exit_code"] for d in data.values())
        finally:
            conn.execute(sql.SQL("SELECT pg_drop_replication_slot({})").format(sql.Literal(slot)))


def test_all_goes_on_past_a_server_it_cannot_reach(app, tmp_path, cli):
    primary, _ = app
    gone = f"postgresql://postgres@127.0.0.1:{sandbox.free_port()}/postgres?connect_timeout=2"
    result = cli("--config", _config(tmp_path, primary=primary, gone=gone), "workload", "--all", "--format", "json")
    data = json.loads(result.stdout)
    assert data["primary"]["exit_code"] == 0 and data["primary"]["role"] == "primary"
    assert data["gone"]["role"] is None and data["gone"]["error"].startswith("can't connect to 127.0.0.1:")
    assert result.exit_code == EXIT_ERROR
