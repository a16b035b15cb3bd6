"""`pgops daemon --once`, the startup checks, `pgops systemd-unit`, and sd_notify on a real datagram socket."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from pgops import migrate
from pgops.config import load_settings
from pgops.daemon.guard import run_lock_key
from pgops.daemon.systemd import Notifier, UnitOptions, render_unit
from tests.daemon.conftest import NotifyListener, free_port
from tests.daemon.sample_jobs import LEDGER_DDL


def write_config(tmp_path: Path, plugin: str, extra: str = "") -> Path:
    path = tmp_path / "pgops.toml"
    path.write_text(f'[daemon]\njobs = []\nplugins = ["tests.daemon.sample_jobs:{plugin}"]\n{extra}')
    return path


def test_once_runs_every_job_once_and_reports(cli, migrated_dsn, conn, tmp_path):
    conn.execute(LEDGER_DDL)
    config = write_config(tmp_path, "ledger_jobs")
    result = cli("--config", config, "--dsn", migrated_dsn, "daemon", "--once", "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(r["job"], r["outcome"]) for r in report] == [("tick", "ok"), ("slow", "ok")]
    ran = conn.execute("SELECT job FROM daemon_test_runs ORDER BY started_at").fetchall()
    assert [row[0] for row in ran] == ["tick", "slow"]
    table = cli("--config", config, "--dsn", migrated_dsn, "daemon", "--once")
    assert table.exit_code == 0
    assert "tick" in table.stdout and "recorded" in table.stdout


def test_once_respects_another_daemons_lock(cli, migrated_dsn, conn, tmp_path):
    conn.execute(LEDGER_DDL)
    config = write_config(tmp_path, "ledger_jobs")
    with psycopg.connect(migrated_dsn, autocommit=True) as other_daemon:
        other_daemon.execute("SELECT pg_advisory_lock(%s)", (run_lock_key("tick"),))
        result = cli("--config", config, "--dsn", migrated_dsn, "daemon", "--once", "--format", "json")
    assert result.exit_code == 0
    assert {r["job"]: r["outcome"] for r in json.loads(result.stdout)} == {"tick": "locked", "slow": "ok"}
    assert [row[0] for row in conn.execute("SELECT job FROM daemon_test_runs")] == ["slow"]


def test_once_exits_non_zero_when_a_job_fails_but_runs_the_others(cli, migrated_dsn, conn, tmp_path):
    conn.execute(LEDGER_DDL)
    result = cli("--config", write_config(tmp_path, "failing_jobs"), "--dsn", migrated_dsn, "daemon", "--once",
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 3
    outcomes = {r["job"]: (r["outcome"], r["detail"]) for r in json.loads(result.stdout)}
    assert outcomes["fails"] == ("failed", "RuntimeError: this job always fails")
    assert outcomes["tick"][0] == "ok"
    assert conn.execute("SELECT count(*) FROM daemon_test_runs").fetchone()[0] == 1


def test_unreachable_database_is_one_line_without_the_password(cli, tmp_path):
    url = f"postgresql://pgops:s3cret@127.0.0.1:{free_port()}/app?connect_timeout=1"
    result = cli("--config", write_config(tmp_path, "ledger_jobs"), "--dsn", url, "daemon", "--once")
    assert result.exit_code == 3
    # retries of a refused connection are logged (a starting server is worth waiting for), then one error line
    assert result.stderr.splitlines()[-1].startswith("pgops: error: can't connect to 127.0.0.1:")
    assert "Connection refused" in result.stderr.splitlines()[-1]
    assert "s3cret" not in result.stderr + result.stdout


def test_daemon_refuses_a_database_without_the_pgops_schema(cli, dsn, tmp_path):
    settings = load_settings(env={}, dsn=dsn)
    if migrate.head_revision(settings) is None:
        pytest.skip("no pgops migration in this tree yet: any database has the (empty) schema it needs")
    result = cli("--config", write_config(tmp_path, "ledger_jobs"), "--dsn", dsn, "daemon", "--listen", "127.0.0.1:0")
    assert result.exit_code == 3
    assert "run `pgops migrate`" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_listen_address_is_refused(cli, migrated_dsn, tmp_path):
    config = write_config(tmp_path, "ledger_jobs")
    result = cli("--config", config, "--dsn", migrated_dsn, "daemon", "--listen", "localhost")
    assert result.exit_code == 3 and "HOST:PORT" in result.stderr


def test_systemd_unit_command(cli, tmp_path):
    result = cli("systemd-unit", "--user", "pgops", "--python", "/srv/pgops/bin/python", "--config-path",
                 "/etc/pgops/pgops.toml", "--listen", "127.0.0.1:9300")  # fmt: skip
    assert result.exit_code == 0
    assert result.stdout == render_unit(
        UnitOptions(python="/srv/pgops/bin/python", user="pgops", listen="127.0.0.1:9300")
    )
    default = cli("systemd-unit")
    assert f"ExecStart={Path(sys.executable).absolute()} -m pgops --config" in default.stdout


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifier_speaks_the_sd_notify_protocol(tmp_path, abstract):
    if abstract:
        name = f"pgops-test-{uuid.uuid4().hex}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind("\0" + name)
        env = {"NOTIFY_SOCKET": "@" + name}
    else:
        path = tmp_path / "notify.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(str(path))
        env = {"NOTIFY_SOCKET": str(path)}
    listener.settimeout(2)
    notifier = Notifier(env)
    try:
        notifier.ready("idle, 3 job(s) scheduled")
        assert listener.recv(4096).decode().splitlines()[:2] == ["READY=1", "STATUS=idle, 3 job(s) scheduled"]
        notifier.watchdog("running refresh\nand more")
        assert listener.recv(4096).decode().splitlines() == ["WATCHDOG=1", "STATUS=running refresh and more"]
        notifier.stopping("stopping")
        assert listener.recv(4096).decode().splitlines() == ["STOPPING=1", "STATUS=stopping"]
    finally:
        notifier.close()
        listener.close()


def test_notifier_without_systemd_does_nothing_and_survives_a_vanished_socket(tmp_path):
    assert not Notifier({}).notify("READY=1")
    listener = NotifyListener(tmp_path / "gone.sock")
    notifier = Notifier({"NOTIFY_SOCKET": str(listener.path)})
    assert notifier.notify("READY=1")
    listener.close()
    listener.path.unlink()
    assert not notifier.notify("WATCHDOG=1")  # logged once, never raised into the daemon


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit_for_this_installation(cli, tmp_path):
    unit = tmp_path / "pgops.service"
    unit.write_text(cli("systemd-unit").stdout)
    verdict = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verdict.returncode == 0, verdict.stderr
    assert "pgops.service" not in verdict.stderr, verdict.stderr  # no warnings about our unit either


def test_the_command_line_loads_no_heavy_library_until_a_command_needs_it():
    """What keeps `pgops daemon` small: importing the command line loads neither the advisor's SQL parser nor
    Alembic/SQLAlchemy (they load when `advise-indexes` or `migrate` run; a job's module when that job first runs)."""
    probe = (
        "import sys, pgops.cli; "
        "print(sorted(m for m in ('sqlglot', 'alembic', 'sqlalchemy', 'pgops.advisor.run') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
