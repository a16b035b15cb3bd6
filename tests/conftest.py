"""Fixtures: a real PostgreSQL with pg_stat_statements (and pg_cron and hypopg where it has them), and a fresh
database per test.

The server is, in order: `PGOPS_TEST_DSN` when set; pgops' own sandbox run with the binaries in `PGOPS_PG_BIN`
when that is set; a testcontainers PostgreSQL built from `deploy/postgres/Dockerfile` when a Docker engine
answers; otherwise pgops' own sandbox with the newest binaries installed. The sandbox is started once per test
session in `.pgops/test-sandbox-<major>` (one folder per major version: a cluster runs only with its own
major's binaries) and stopped at the end if this session started it.

Tests marked `needs_hypopg` or `needs_pg_cron` skip, saying so, on a server without that extension;
`--require-extensions=hypopg,pg_cron` (what `make test` passes for the distribution's server) makes a missing
one stop the session instead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hypothesis
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgops import sandbox
from pgops.cli import run as run_cli
from pgops.sandbox import Sandbox, recreate_database

ROOT = Path(__file__).resolve().parent.parent

# No property test is timed: hypothesis' default 200 ms deadline per example failed them on a loaded machine.
hypothesis.settings.register_profile("pgops", deadline=None)
hypothesis.settings.load_profile("pgops")
EXTENSIONS_PER_DATABASE = ("pg_stat_statements", "hypopg")
OPTIONAL_EXTENSIONS = ("hypopg", "pg_cron")  # tests that need one are marked needs_<name>


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-extensions",
        default="",
        help="comma-separated extensions (hypopg, pg_cron) the test server must have: stop instead of skipping",
    )


@dataclass(frozen=True)
class PgServer:
    """The test server: `dsn` connects as a superuser to its maintenance database."""

    dsn: str
    sandbox_dir: Path | None = None  # set when the server is pgops' own sandbox
    extensions: frozenset[str] = frozenset()  # which of OPTIONAL_EXTENSIONS it has
    version: str = ""
    version_num: int = 0

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


def sandbox_dir(name: str) -> Path:
    """`.pgops/<name>-<major>`: a sandbox folder for the server binaries this session runs, so that the legs of
    `make test` (and a developer switching binaries) never start a cluster with another major's binaries."""
    return ROOT / ".pgops" / f"{name}-{sandbox.server_major(sandbox.find_bindir())}"


@contextlib.contextmanager
def _sandbox_server() -> Iterator[tuple[str, Path]]:
    directory = sandbox_dir("test-sandbox")
    box = Sandbox(directory)
    started_here = not box.running()
    url = box.start()
    try:
        yield url, directory
    finally:
        if started_here:
            box.stop()


def _extensions(dsn: str) -> tuple[frozenset[str], str, int]:
    """The optional extensions the server can give a test database (pg_cron: loaded and created in its
    database), and its version."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        row = conn.execute(
            "SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'hypopg'), "
            # pg_settings lists cron.database_name only while pg_cron is loaded (a mere placeholder is hidden)
            "(SELECT setting FROM pg_settings WHERE name = 'cron.database_name'), "
            "current_setting('server_version'), current_setting('server_version_num')::int"
        ).fetchone()
    hypopg, cron_database, version, version_num = row
    found = {"hypopg"} if hypopg else set()
    if cron_database:
        with psycopg.connect(make_conninfo(dsn, dbname=cron_database), autocommit=True) as conn:
            if conn.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron')").fetchone()[0]:
                found.add("pg_cron")
    return frozenset(found), version, version_num


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    with contextlib.ExitStack() as stack:
        if os.environ.get("PGOPS_TEST_DSN"):
            dsn, directory = os.environ["PGOPS_TEST_DSN"], None
        elif not os.environ.get(sandbox.PG_BIN_ENV) and _docker_answers():
            dsn, directory = stack.enter_context(_container_server()), None
        else:
            dsn, directory = stack.enter_context(_sandbox_server())
        extensions, version, version_num = _extensions(dsn)
        required = {name.strip() for name in request.config.getoption("--require-extensions").split(",")} - {""}
        if required - extensions:
            packages = Sandbox(directory).status().missing_extensions if directory else {}
            pytest.exit(
                f"the tests were asked to require {', '.join(sorted(required))}, and PostgreSQL {version} lacks "
                + ", ".join(f"{name} (install {packages.get(name, name)})" for name in sorted(required - extensions)),
                returncode=3,
            )
        yield PgServer(dsn, directory, extensions, version, version_num)


@pytest.fixture(autouse=True)
def _skip_without_extension(request: pytest.FixtureRequest) -> None:
    """Tests marked needs_hypopg / needs_pg_cron skip, with the reason, on a server without that extension.

    Only marked tests ask for the server here, so unit tests still run without one."""
    for extension in OPTIONAL_EXTENSIONS:
        if request.node.get_closest_marker(f"needs_{extension}"):
            server: PgServer = request.getfixturevalue("pg_server")
            if extension not in server.extensions:
                pytest.skip(f"needs {extension}, which the test server (PostgreSQL {server.version}) lacks")


@contextlib.contextmanager
def replicated_sandbox(replicas: int = 1) -> Iterator[Sandbox]:
    """A primary with `replicas` streaming replicas, of the caller's own (the shared test server has none), in a
    folder under /tmp, which the postgres user can reach; stopped and removed afterwards."""
    try:
        bindir = sandbox.find_bindir()
    except sandbox.PgopsError as exc:
        pytest.skip(str(exc))
    if not (bindir / "pg_basebackup").is_file():
        pytest.skip(f"no pg_basebackup in {bindir}: a streaming replica is made with it")
    box = Sandbox(tempfile.mkdtemp(prefix="pgops-replicas-"))
    try:
        box.start(replicas=replicas)
        yield box
    finally:
        box.stop(remove=True)


@pytest.fixture(scope="session")
def replicas() -> Iterator[Sandbox]:
    """A primary with one streaming replica (replica-1), shared by the session's replication tests: each works in a
    database of its own, or drops what it makes."""
    with replicated_sandbox(1) as box:
        yield box


def create_database(server: PgServer, prefix: str = "pgops_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    wanted = [e for e in EXTENSIONS_PER_DATABASE if e not in OPTIONAL_EXTENSIONS or e in server.extensions]
    recreate_database(server.dsn, name, wanted)
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
