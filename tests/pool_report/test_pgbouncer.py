"""The pool report reading a real PgBouncer with more clients than its pool."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from pgops.config import PoolReportSettings
from pgops.errors import EXIT_CRITICAL, ConnectError, PgopsError
from pgops.pool_report.limits import pgbouncer_usage
from pgops.pool_report.pgbouncer import read_pgbouncer
from pgops.sandbox import free_port
from tests.conftest import ROOT
from tests.helpers import wait_until

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
POOL_SIZE = 2


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Bouncer:
    port: int
    dbname: str

    def client_dsn(self) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, dbname=self.dbname, user="postgres")

    def admin_dsn(self) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, dbname="pgbouncer", user="postgres")


@pytest.fixture
def pgbouncer(pg_server, dbname) -> Iterator[Bouncer]:
    """A PgBouncer (as the postgres user: it refuses root) in front of the test database, pool_size 2."""
    if not Path(PGBOUNCER).exists():
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer)")
    server = conninfo_to_dict(pg_server.dsn)
    folder = ROOT / ".pgops" / f"pgbouncer-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    port = free_port()
    (folder / "userlist.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n{dbname} = host={server.get('host', '127.0.0.1')} port={server.get('port', 5432)} "
        f"dbname={dbname}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'userlist.txt'}\nadmin_users = postgres\n"
        f"pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\nreserve_pool_size = 0\nmax_client_conn = 20\n"
    )
    as_postgres = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
    with (folder / "pgbouncer.log").open("w") as log:
        proc = subprocess.Popen(
            [PGBOUNCER, str(folder / "pgbouncer.ini")], stdout=log, stderr=log, cwd="/", **as_postgres
        )
    try:
        wait_until(lambda: accepts(port) or proc.poll() is not None)
        assert proc.poll() is None, (folder / "pgbouncer.log").read_text()
        yield Bouncer(port, dbname)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def waiting_clients(bouncer: Bouncer) -> int:
    with (
        psycopg.connect(bouncer.admin_dsn(), autocommit=True, cursor_factory=psycopg.ClientCursor) as admin,
        admin.cursor(row_factory=dict_row) as cur,
    ):
        pools = cur.execute("SHOW POOLS").fetchall()
    return sum(int(p["cl_waiting"]) for p in pools if p["database"] == bouncer.dbname)


def test_report_shows_waiting_clients_and_pool_saturation(cli, dsn, pgbouncer, sessions):
    clients = POOL_SIZE + 2
    for _ in range(clients):
        sessions.run_in_background(sessions.open(pgbouncer.client_dsn()), "SELECT pg_sleep(2)")
    wait_until(lambda: waiting_clients(pgbouncer) == clients - POOL_SIZE)

    result = cli("--dsn", dsn, "pool-report", "--pgbouncer", pgbouncer.admin_dsn(), "--format", "json")
    assert result.exit_code == EXIT_CRITICAL, result.stderr
    (pool,) = [p for p in json.loads(result.stdout)["pgbouncer"] if p["database"] == pgbouncer.dbname]
    assert pool["clients_waiting"] == clients - POOL_SIZE
    assert pool["clients_active"] == POOL_SIZE
    assert (pool["servers_used"], pool["pool_size"], pool["ratio"]) == (POOL_SIZE, POOL_SIZE, 1.0)
    assert pool["maxwait_seconds"] > 0
    assert pool["level"] == EXIT_CRITICAL

    table = cli("--dsn", dsn, "pool-report", "--pgbouncer", pgbouncer.admin_dsn())
    assert "PgBouncer pools" in table.stdout and pgbouncer.dbname in table.stdout

    sample = read_pgbouncer(pgbouncer.admin_dsn())
    relaxed = PoolReportSettings(warning=2.0, critical=3.0)  # saturation alone would be fine now...
    (usage,) = [u for u in pgbouncer_usage(sample, relaxed) if u.database == pgbouncer.dbname]
    assert usage.level == 1  # ...but clients waiting for a server are a warning


def test_unreachable_console_is_one_line_error(pgbouncer):
    with pytest.raises(PgopsError, match=r"can.t read PgBouncer.s console .* admin_users"):
        read_pgbouncer(make_conninfo(pgbouncer.admin_dsn(), user="nobody_here"))


def test_the_console_is_read_without_the_users_pgoptions(pgbouncer, monkeypatch):
    """PgBouncer refuses startup parameters it does not know: the console session sends no `options`, even when
    PGOPTIONS would (a search_path the user set for PostgreSQL)."""
    monkeypatch.setenv("PGOPTIONS", "-c search_path=app,public")
    sample = read_pgbouncer(pgbouncer.admin_dsn())
    assert pgbouncer.dbname in [d.name for d in sample.databases]


def test_an_unknown_console_user_is_a_connect_error(pgbouncer):
    with pytest.raises(ConnectError, match=r"can.t read PgBouncer.s console .* admin_users") as failure:
        read_pgbouncer(make_conninfo(pgbouncer.admin_dsn(), user="nobody_here"))
    assert len(failure.value.message.splitlines()) == 1
