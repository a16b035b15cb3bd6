import os
import uuid

import psycopg
import pytest

from pgops import sandbox
from pgops.errors import EXIT_ERROR, PgopsError
from tests.conftest import ROOT


def test_missing_server_binaries_named_with_package(monkeypatch, cli, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sandbox, "_SEARCH_PATTERNS", ())
    result = cli("sandbox", "start", "--dir", tmp_path / "box")
    assert result.exit_code == EXIT_ERROR
    line = result.stderr.strip()
    assert "\n" not in line
    assert "initdb" in line and "postgresql-15" in line


def test_missing_extension_names_its_package(monkeypatch):
    bindir = sandbox.find_bindir()
    monkeypatch.setattr(sandbox, "_pkglibdir", lambda _: ROOT / "no-such-libdir")
    missing = sandbox.missing_extensions(bindir)
    major = sandbox._major(bindir)
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
        assert listen == "127.0.0.1"
        assert {"pg_stat_statements", "pg_cron"} <= set(preload.split(","))
        assert {"pg_stat_statements", "pg_cron", "hypopg"} <= extensions
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
