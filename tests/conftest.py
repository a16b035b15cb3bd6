"""Fixtures: a real PostgreSQL with pg_stat_statements, pg_cron and hypopg, and a fresh database per test.

The server is, in order: `PGOPS_TEST_DSN` when set; a testcontainers PostgreSQL built from
`deploy/postgres/Dockerfile` when a Docker engine answers; otherwise pgops' own sandbox, started once per test
session in `.pgops/test-sandbox` (and stopped at the end if this session started it).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgops import sandbox
from pgops.cli import run as run_cli
from pgops.sandbox import Sandbox, recreate_database

ROOT = Path(__file__).resolve().parent.parent
EXTENSIONS_PER_DATABASE = ("pg_stat_statements", "hypopg")


@dataclass(frozen=True)
class PgServer:
    """The test server: `dsn` connects as a superuser to its maintenance database."""

    dsn: str
    sandbox_dir: Path | None = None  # set when the server is pgops' own sandbox

    def database_dsn(self, dbname: str, **params: str) -> str:
        return make_conninfo(self.dsn, dbname=dbname, **params)

    @property
    def cron_database(self) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute("SHOW cron.database_name").fetchone()[0]

    @property
    def cron_dsn(self) -> str:
        """The database pg_cron keeps its jobs in (`cron.database_name`)."""
        return self.database_dsn(self.cron_database)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _container_server() -> Iterator[str]:
    from testcontainers.core.image import DockerImage
    from testcontainers.postgres import PostgresContainer

    with DockerImage(path=str(ROOT / "deploy" / "postgres"), tag="pgops-postgres:test") as image:
        container = PostgresContainer(str(image), driver=None).with_command(
            "postgres -c shared_preload_libraries=pg_stat_statements,pg_cron "
            "-c cron.database_name=postgres -c max_connections=300"
        )
        with container as pg:
            yield pg.get_connection_url()


SANDBOX_DIR = ROOT / ".pgops" / "test-sandbox"


@contextlib.contextmanager
def _sandbox_server() -> Iterator[str]:
    box = Sandbox(SANDBOX_DIR)
    started_here = not box.running()
    url = box.start()
    missing = box.status().missing_extensions
    if missing:
        box.stop()
        pytest.exit(
            "the tests need these extensions: "
            + ", ".join(f"{name} (install {package})" for name, package in missing.items()),
            returncode=3,
        )
    try:
        yield url
    finally:
        if started_here:
            box.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    if os.environ.get("PGOPS_TEST_DSN"):
        yield PgServer(os.environ["PGOPS_TEST_DSN"])
        return
    docker = _docker_answers()
    source = _container_server() if docker else _sandbox_server()
    with source as dsn:
        server = PgServer(dsn, sandbox_dir=None if docker else SANDBOX_DIR)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        yield server


def create_database(server: PgServer, prefix: str = "pgops_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    recreate_database(server.dsn, name, EXTENSIONS_PER_DATABASE)
    return name


def drop_database(server: PgServer, name: str) -> None:
    sandbox.drop_database(server.dsn, name)


@pytest.fixture
def dbname(pg_server: PgServer) -> Iterator[str]:
    """A fresh database of this test's own, dropped afterwards."""
    name = create_database(pg_server)
    yield name
    drop_database(pg_server, name)


@pytest.fixture
def dsn(pg_server: PgServer, dbname: str) -> str:
    """Superuser connection string for this test's own database."""
    return pg_server.database_dsn(dbname)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run `pgops ARGS...` in process; returns exit code, stdout and stderr."""
    monkeypatch.setenv("COLUMNS", "200")

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        code = run_cli([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return invoke
