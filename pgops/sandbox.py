"""A throwaway local PostgreSQL for the demo, the tests and users trying pgops.

The cluster listens on loopback only, on a free port, with `trust` authentication (it is throwaway: never
point it at data you care about). pg_stat_statements and pg_cron are preloaded and hypopg is created when
they are installed. Started as root, the server runs as the `postgres` user, because initdb refuses root.
Any major version runs: the binaries come from `--pg-bin`, `PGOPS_PG_BIN`, or the newest found on the machine.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgops.errors import PgopsError
from pgops.refresh import cron
from pgops.resources import read_sql

DEFAULT_DIR = Path(".pgops/sandbox")
REPLICA_WAIT = 60.0  # seconds a replica may take to start streaming (an empty cluster's takes about one)
PG_BIN_ENV = "PGOPS_PG_BIN"
SUPERUSER = "postgres"
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")

# extension → (shared library, needs preloading, Debian package pattern)
EXTENSIONS = {
    "pg_stat_statements": ("pg_stat_statements", True, "postgresql-contrib"),
    "pg_cron": ("pg_cron", True, "postgresql-{major}-cron"),
    "hypopg": ("hypopg", False, "postgresql-{major}-hypopg"),
}

_SEARCH_PATTERNS = (
    "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
    "/usr/pgsql-*/bin",  # RHEL (PGDG)
    "/opt/homebrew/opt/postgresql@*/bin",  # Homebrew on Apple silicon
    "/usr/local/opt/postgresql@*/bin",  # Homebrew on Intel
    "/opt/homebrew/bin",
    "/usr/local/pgsql/bin",
)


def _version_key(path: str) -> tuple[int, ...]:
    digits = [int(part) for part in "".join(c if c.isdigit() else " " for c in path).split()]
    return tuple(digits) or (0,)


def _has_server(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in SERVER_BINARIES)


def find_bindir(pg_bin: Path | str | None = None) -> Path:
    """The server binaries to run: `pg_bin` when given, then `PGOPS_PG_BIN`, then the newest found on the machine
    (`pg_config --bindir`, then the usual install locations)."""
    for chosen, origin in ((pg_bin, "--pg-bin"), (os.environ.get(PG_BIN_ENV), PG_BIN_ENV)):
        if chosen:
            bindir = Path(chosen).expanduser().absolute()
            if not _has_server(bindir):
                raise PgopsError(
                    f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) in {bindir} (from {origin}): "
                    "name the bin folder of a PostgreSQL installation"
                )
            return bindir
    for bindir in _candidates():
        if _has_server(bindir):
            return bindir
    raise PgopsError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install them "
        "(Debian: apt-get install postgresql-15; Homebrew: brew install postgresql@15), "
        f"put their pg_config on PATH, or name their folder with --pg-bin or {PG_BIN_ENV}"
    )


def _candidates() -> list[Path]:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout
            candidates.append(Path(out.strip()))
    for pattern in _SEARCH_PATTERNS:
        candidates += [Path(p) for p in sorted(glob.glob(pattern), key=_version_key, reverse=True)]
    return candidates


def server_major(bindir: Path) -> int:
    """The major version of the server binaries in `bindir` (15, 18...)."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True).stdout
    return int(out.split()[2].split(".")[0])


def _bindir_of_major(major: int, preferred: str | None) -> Path | None:
    """Server binaries of `major` on this machine (the ones that made the cluster first), or None."""
    for bindir in ([Path(preferred)] if preferred else []) + _candidates():
        if _has_server(bindir) and server_major(bindir) == major:
            return bindir
    return None


def _pkglibdir(bindir: Path) -> Path:
    pg_config = bindir / "pg_config"
    if pg_config.is_file():
        out = subprocess.run([str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())
    return bindir.parent / "lib"


def missing_extensions(bindir: Path) -> dict[str, str]:
    """Extensions whose shared library is not installed, each with the package that provides it."""
    libdir, major = _pkglibdir(bindir), server_major(bindir)
    return {
        name: package.format(major=major)
        for name, (library, _, package) in EXTENSIONS.items()
        if not any((libdir / f"{library}{suffix}").exists() for suffix in (".so", ".dylib"))
    }


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def recreate_database(server_dsn: str, name: str, extensions: Iterable[str] = ()) -> str:
    """Drop database `name` if it exists, create it afresh with `extensions`, and return its connection string.

    For the demo, the tests and the benchmarks, which each want a database of their own on a throwaway server.
    """
    drop_database(server_dsn, name)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(server_dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for extension in extensions:
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension)))
    return dsn


def drop_database(server_dsn: str, name: str) -> None:
    """Drop database `name` and, first, its pg_cron jobs (pg_cron would fail them every minute, forever)."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        cron.unschedule_database(conn, name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass
class SandboxState:
    port: int
    bindir: str
    missing: dict[str, str]


@dataclass
class SandboxStatus:
    directory: str
    created: bool
    running: bool
    url: str | None
    pid: int | None
    missing_extensions: dict[str, str]
    major: int | None = None  # the cluster's PostgreSQL major version (its data folder's PG_VERSION)
    replicas: list[ReplicaStatus] = field(default_factory=list)


@dataclass
class ReplicaStatus:
    number: int
    directory: str
    url: str
    running: bool
    pid: int | None
    # stopped; streaming (or another pg_stat_replication state) while a standby; promoted once it is a primary
    state: str


class Sandbox:
    """One cluster in `directory`: `data/` (PGDATA), `server.log`, `sandbox.json` (port, binaries), and its
    streaming replicas, each a cluster of the same layout in `replica-<n>/`.

    `pg_bin` names the server binaries to start it with (else `PGOPS_PG_BIN`, else the newest found).
    """

    def __init__(self, directory: Path | str = DEFAULT_DIR, pg_bin: Path | str | None = None) -> None:
        self.directory = Path(directory).absolute()
        self.pg_bin = pg_bin
        self.data = self.directory / "data"
        self.logfile = self.directory / "server.log"
        self.statefile = self.directory / "sandbox.json"
        self._as_postgres = os.geteuid() == 0

    # -- state ---------------------------------------------------------------------------------------------
    def _state(self) -> SandboxState | None:
        if not self.statefile.exists():
            return None
        return SandboxState(**json.loads(self.statefile.read_text()))

    def _save(self, state: SandboxState) -> None:
        self.statefile.write_text(json.dumps(asdict(state), indent=2) + "\n")

    def data_major(self) -> int | None:
        """The major version that made the cluster in `data/`, None before it exists."""
        try:
            return int((self.data / "PG_VERSION").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def bindir(self) -> Path:
        """The server binaries this sandbox runs with (psql and the other client programs sit beside them)."""
        state = self._state()
        return Path(state.bindir) if state else find_bindir(self.pg_bin)

    def url(self, dbname: str = "postgres", replica: int | None = None) -> str:
        if replica is not None:
            box = self.replica(replica)
            if box._state() is None:
                raise PgopsError(
                    f"no replica {replica} in {self.directory}: run `pgops sandbox start --replicas {replica}` first"
                )
            return box.url(dbname)
        state = self._state()
        if state is None:
            raise PgopsError(f"no sandbox in {self.directory}: run `pgops sandbox start` first")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{state.port}/{dbname}"

    # -- processes -----------------------------------------------------------------------------------------
    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {"user": "postgres", "group": "postgres"} if self._as_postgres else {}
        proc = subprocess.run(
            list(args), capture_output=True, text=True, cwd="/", env={**os.environ, "LC_ALL": "C"}, **kwargs
        )
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise PgopsError(f"{Path(args[0]).name} failed: {detail[-1] if detail else proc.returncode}")
        return proc

    def _pg_ctl(self, bindir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(str(bindir / "pg_ctl"), "-D", str(self.data), *args, check=check)

    def _pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def running(self) -> bool:
        state = self._state()
        return state is not None and self._pid() is not None

    # -- replicas ------------------------------------------------------------------------------------------
    def replica(self, number: int) -> Sandbox:
        """Replica `number` (from 1): a cluster of its own in `replica-<number>/`, made or not."""
        if number < 1:
            raise PgopsError(f"replicas are numbered from 1, got {number}")
        return Sandbox(self.directory / f"replica-{number}", self.pg_bin)

    def replica_numbers(self) -> list[int]:
        """The replicas made so far (a `replica-<n>/` with its state file)."""
        found = []
        for path in self.directory.glob("replica-*"):
            suffix = path.name.removeprefix("replica-")
            if suffix.isdigit() and (path / "sandbox.json").exists():
                found.append(int(suffix))
        return sorted(found)

    def _start_replica(self, number: int, primary: SandboxState) -> None:
        """Make replica `number` with pg_basebackup -R if it has no cluster yet, then start it."""
        box = self.replica(number)
        if box._pid() is not None:
            return
        state = box._state()
        if state is None or box.data_major() is None:
            if not (Path(primary.bindir) / "pg_basebackup").is_file():
                raise PgopsError(
                    f"no pg_basebackup in {primary.bindir}, which a replica is made with: install PostgreSQL's client "
                    "programs beside the server's, or name a complete installation with --pg-bin"
                )
            box._prepare_directory()
            if box.data.exists():
                shutil.rmtree(box.data)  # a base backup that stopped half way
            self._run(
                str(Path(primary.bindir) / "pg_basebackup"), "-D", str(box.data), "-R", "-X", "stream",
                "-c", "fast", "--no-sync", "-d", self._primary_conninfo(primary, number),
            )  # fmt: skip
            state = SandboxState(port=free_port(), bindir=primary.bindir, missing=primary.missing)
        else:
            state.bindir, state.missing = primary.bindir, primary.missing
            if not _port_is_free(state.port):
                state.port = free_port()
        box._save(state)
        box._write_conf(state)  # the copy of the primary's says the primary's port
        box._point_at_primary(self._primary_conninfo(primary, number))
        box._pg_ctl(Path(state.bindir), "-l", str(box.logfile), "-w", "-t", "60", "start")

    @staticmethod
    def _primary_conninfo(primary: SandboxState, number: int) -> str:
        # application_name names the replica in the primary's pg_stat_replication
        return make_conninfo(
            host="127.0.0.1", port=str(primary.port), user=SUPERUSER, application_name=f"replica-{number}"
        )

    def _point_at_primary(self, conninfo: str) -> None:
        """Rewrite primary_conninfo, which pg_basebackup -R put in postgresql.auto.conf: the primary gets a new
        port when its old one was taken at a restart."""
        auto = self.data / "postgresql.auto.conf"
        lines = [line for line in auto.read_text().splitlines() if not line.startswith("primary_conninfo")]
        quoted = conninfo.replace("'", "''")
        auto.write_text("\n".join([*lines, f"primary_conninfo = '{quoted}'"]) + "\n")

    def wait_streaming(self, numbers: Iterable[int], timeout: float = REPLICA_WAIT) -> None:
        """Poll the primary's pg_stat_replication until each replica streams (or `timeout` seconds pass)."""
        wanted = {f"replica-{n}" for n in numbers}
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.url(), autocommit=True) as conn:
            while True:
                rows = conn.execute(read_sql("sandbox/replication.sql")).fetchall()
                waiting = wanted - {name for name, state in rows if state == "streaming"}
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    raise PgopsError(
                        f"{', '.join(sorted(waiting))} of {self.directory} not streaming after {timeout:g}s: "
                        f"see {self.directory}/replica-N/server.log"
                    )
                time.sleep(0.1)

    def promote(self, number: int = 1) -> str:
        """Promote replica `number` to a primary of its own (it stops following), and return its URL."""
        box = self.replica(number)
        state = box._state()
        if state is None or box._pid() is None:
            raise PgopsError(f"replica {number} of {self.directory} is not running: `pgops sandbox start` first")
        if (box.data / "standby.signal").exists():
            box._pg_ctl(Path(state.bindir), "-w", "-t", "60", "promote")
        return box.url()

    # -- commands ------------------------------------------------------------------------------------------
    def _prepare_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            postgres = pwd.getpwnam("postgres")
            os.chown(self.directory, postgres.pw_uid, postgres.pw_gid)
            probe = self._run("test", "-w", str(self.directory), check=False)
            if probe.returncode != 0:
                raise PgopsError(
                    f"the postgres user can't write to {self.directory} (a parent folder is closed to it): "
                    "choose a --dir under a folder others may enter, such as /tmp"
                )

    def _create(self, bindir: Path) -> SandboxState:
        self._prepare_directory()
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                "-E", "UTF8", "--no-locale", "--no-instructions",
            )  # fmt: skip
        state = SandboxState(port=free_port(), bindir=str(bindir), missing=missing_extensions(bindir))
        self._save(state)
        return state

    def _write_conf(self, state: SandboxState) -> None:
        preload = [lib for name, (lib, preload, _) in EXTENSIONS.items() if preload and name not in state.missing]
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(state.port),
            "unix_socket_directories": "''",
            "max_connections": "300",
            "shared_preload_libraries": f"'{','.join(preload)}'",
            "max_worker_processes": "32",
            "pg_stat_statements.track": "'all'",
            "track_io_timing": "on",
            # throwaway data: trade durability for speed
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
        }
        if server_major(Path(state.bindir)) >= 16:
            # slots kept for roles in pg_use_reserved_connections (16+), as servers that keep some for monitoring
            # do: pool-report must not count them as usable, and the tests see that it doesn't
            settings["reserved_connections"] = "2"
        if "pg_cron" not in state.missing:
            # only with pg_cron loaded: without it, cron.database_name would still read as set (a placeholder),
            # and pgops would look for pg_cron's jobs in a database that has none
            settings |= {"cron.database_name": "'postgres'", "cron.use_background_workers": "on"}
        conf = "".join(f"{key} = {value}\n" for key, value in settings.items())
        (self.data / "pgops_sandbox.conf").write_text("# written by pgops sandbox\n" + conf)
        main_conf = self.data / "postgresql.conf"
        if "include_if_exists = 'pgops_sandbox.conf'" not in main_conf.read_text():
            with main_conf.open("a") as fh:
                fh.write("\ninclude_if_exists = 'pgops_sandbox.conf'\n")

    def _create_extensions(self, state: SandboxState) -> None:
        wanted = [name for name in ("pg_stat_statements", "hypopg") if name not in state.missing]
        # template1 first, so every database created later (a test's, the demo's) has them too.
        for dbname in ("template1", "postgres"):
            with psycopg.connect(self.url(dbname), autocommit=True) as conn:
                for name in wanted:
                    conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
                if dbname == "postgres" and "pg_cron" not in state.missing:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")

    def start(self, replicas: int = 0) -> str:
        """Create the cluster if needed and start it, with replicas 1 to `replicas` and those made before;
        harmless when it already runs. Waits until every replica streams. Returns the primary's URL."""
        self._start_primary()
        numbers = sorted(set(range(1, replicas + 1)) | set(self.replica_numbers()))
        state = self._state()
        assert state is not None
        for number in numbers:
            self._start_replica(number, state)
        standbys = [n for n in numbers if (self.replica(n).data / "standby.signal").exists()]
        if standbys:
            self.wait_streaming(standbys)
        return self.url()

    def _start_primary(self) -> None:
        state = self._state()
        if state is not None and self.data_major() is not None and self._pid() is not None:
            return
        bindir = find_bindir(self.pg_bin)
        self._check_major(bindir, state)
        if state is None or self.data_major() is None:
            state = self._create(bindir)
        else:
            state.bindir, state.missing = str(bindir), missing_extensions(bindir)
            if not _port_is_free(state.port):
                state.port = free_port()
            self._save(state)
        self._write_conf(state)
        self._pg_ctl(bindir, "-l", str(self.logfile), "-w", "-t", "60", "start")
        self._create_extensions(state)

    def _check_major(self, bindir: Path, state: SandboxState | None) -> None:
        """A cluster starts only with its own major's binaries: say which two differ and how to fix it, in one
        line (pg_ctl itself would only say that the control file "appears to be corrupt")."""
        made, found = self.data_major(), server_major(bindir)
        if made is None or made == found:
            return
        own = _bindir_of_major(made, state.bindir if state else None)
        use = f"--pg-bin {own}" if own else f"--pg-bin with PostgreSQL {made}'s bin folder"
        raise PgopsError(
            f"the sandbox in {self.directory} was made by PostgreSQL {made}, but the server binaries in {bindir} "
            f"are PostgreSQL {found}: start it with {use} (or {PG_BIN_ENV}), or remove it to start afresh with "
            f"PostgreSQL {found}: pgops sandbox stop --remove --dir {self.directory}"
        )

    def stop(self, remove: bool = False) -> bool:
        """Stop the replicas, then the server (fast shutdown, waits until each is gone). Returns whether the
        primary was running."""
        for number in self.replica_numbers():
            self.replica(number).stop()
        state = self._state()
        was_running = state is not None and self._pid() is not None
        if was_running:
            self._pg_ctl(Path(state.bindir), "-m", "fast", "-w", "-t", "60", "stop")
        if remove and self.directory.exists():
            shutil.rmtree(self.directory)
        return was_running

    def status(self) -> SandboxStatus:
        state = self._state()
        pid = self._pid() if state else None
        return SandboxStatus(
            directory=str(self.directory),
            created=state is not None,
            running=pid is not None,
            url=self.url() if state else None,
            pid=pid,
            missing_extensions=state.missing if state else {},
            major=self.data_major(),
            replicas=[self._replica_status(n, streaming=pid is not None) for n in self.replica_numbers()],
        )

    def _replica_status(self, number: int, streaming: bool) -> ReplicaStatus:
        box = self.replica(number)
        pid = box._pid()
        if pid is None:
            state = "stopped"
        elif not (box.data / "standby.signal").exists():
            state = "promoted"
        else:
            state = "not streaming"
            if streaming:  # the primary runs: ask it
                with contextlib.suppress(psycopg.Error), psycopg.connect(self.url(), connect_timeout=5) as conn:
                    states = dict(conn.execute(read_sql("sandbox/replication.sql")).fetchall())
                    state = states.get(f"replica-{number}", state)
        return ReplicaStatus(number, str(box.directory), box.url(), pid is not None, pid, state)
