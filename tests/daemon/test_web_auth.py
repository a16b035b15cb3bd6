"""The pages beyond loopback: a real daemon refuses to start there without a token (one line, exit 3), and with
one it refuses every page request that lacks it (HTTP 401), whichever way it is sent, and never logs it."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pgops.config import load_settings
from pgops.errors import PgopsError
from pgops.web import make_pages
from pgops.web.auth import authorized, is_loopback, load_token
from tests.daemon.conftest import ROOT, free_port, wait_for
from tests.daemon.test_start_failures import not_json

TOKEN = "s3cret-token-for-the-test-0123456789"


def _daemon(
    dsn: str, tmp_path: Path, host: str, env: dict[str, str], config: str = ""
) -> tuple[subprocess.Popen, int, Path]:
    path = tmp_path / "pgops.toml"
    path.write_text(f'[daemon]\njobs = []\nhealth_interval = "0.5s"\n{config}')
    port = free_port()
    log = tmp_path / "daemon.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PGOPS_", "NOTIFY_", "WATCHDOG_"))}
    environment.update({"PGOPS_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT), **env})
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgops", "--config", str(path), "daemon", "--listen", f"{host}:{port}"],
            cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    return proc, port, log


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _up(url: str) -> bool:
    try:
        return _get(url)[0] == 200
    except OSError:
        return False


def test_beyond_loopback_without_a_token_the_daemon_does_not_start(migrated_dsn, tmp_path):
    proc, _, log = _daemon(migrated_dsn, tmp_path, "0.0.0.0", {})
    assert proc.wait(20) == 3
    errors = not_json(log.read_text())
    assert len(errors) == 1 and "without a token" in errors[0] and "PGOPS_WEB_TOKEN" in errors[0], errors


def test_beyond_loopback_with_pages_off_the_daemon_serves_metrics_without_a_token(migrated_dsn, tmp_path):
    proc, port, log = _daemon(migrated_dsn, tmp_path, "0.0.0.0", {}, "[web]\nenabled = false\n")
    try:
        wait_for(lambda: proc.poll() is not None or _up(f"http://127.0.0.1:{port}/healthz"), 30, "the daemon")
        assert proc.poll() is None, log.read_text()
        assert _get(f"http://127.0.0.1:{port}/")[0] == 404
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.parametrize("source", ["environment", "file"])
def test_beyond_loopback_a_page_needs_the_token(migrated_dsn, tmp_path, source):
    if source == "environment":
        proc, port, log = _daemon(migrated_dsn, tmp_path, "0.0.0.0", {"PGOPS_WEB_TOKEN": TOKEN})
    else:
        token_file = tmp_path / "web-token"
        token_file.write_text(TOKEN + "\n")
        proc, port, log = _daemon(migrated_dsn, tmp_path, "0.0.0.0", {}, f'[web]\ntoken_file = "{token_file}"\n')
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or _up(base + "/healthz"), 30, "the daemon")
        assert proc.poll() is None, log.read_text()
        for path in ("/", "/connections", "/advice", "/advice/fix.sql", "/workload", "/nowhere"):
            code, headers, body = _get(base + path)
            assert code == 401 and "Basic" in headers["WWW-Authenticate"] and "token" in body, path
        assert _get(base + "/", {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(base + "/", {"Authorization": f"Bearer {TOKEN}x"})[0] == 401
        code, _, body = _get(base + "/", {"Authorization": f"Bearer {TOKEN}"})
        assert code == 200 and "Overview" in body
        basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        assert _get(base + "/refresh", {"Authorization": f"Basic {basic}"})[0] == 200
        # Prometheus and health checks stay as they were: they show no query text
        assert _get(base + "/metrics")[0] == 200 and _get(base + "/healthz")[0] == 200
    finally:
        proc.terminate()
        proc.wait(20)
    assert TOKEN not in log.read_text()


def test_on_loopback_no_token_is_needed_unless_one_is_set(migrated_dsn):
    settings = load_settings(env={}, dsn=migrated_dsn)
    pages = make_pages(settings, migrated_dsn, "127.0.0.1", env={})
    assert pages is not None and pages.answer("/advice", None).code == 200
    guarded = make_pages(settings, migrated_dsn, "127.0.0.1", env={"PGOPS_WEB_TOKEN": TOKEN})
    assert guarded.answer("/advice", None).code == 401 and TOKEN not in repr(guarded)
    with pytest.raises(PgopsError, match="without a token"):
        make_pages(settings, migrated_dsn, "::", env={})


def test_the_authorization_header_is_read_strictly():
    assert authorized(None, None) and not authorized(None, TOKEN) and not authorized("", TOKEN)
    assert authorized(f"Bearer {TOKEN}", TOKEN) and authorized(f"bearer   {TOKEN} ", TOKEN)
    assert not authorized(f"Token {TOKEN}", TOKEN) and not authorized("Bearer", TOKEN)
    assert authorized("Basic " + base64.b64encode(f"u:{TOKEN}".encode()).decode(), TOKEN)
    assert not authorized("Basic " + base64.b64encode(TOKEN.encode()).decode(), TOKEN)  # no password part
    assert not authorized("Basic !!notbase64", TOKEN) and not authorized("Basic " + "gA==", TOKEN)


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.5", "192.168.1.1"]))


def test_a_bad_token_source_is_one_line_naming_it_not_its_content(tmp_path):
    settings = load_settings(env={})
    with pytest.raises(PgopsError, match="PGOPS_WEB_TOKEN is set but empty"):
        load_token(settings, {"PGOPS_WEB_TOKEN": "  "})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    config = tmp_path / "pgops.toml"
    for path, message in [(empty, "is empty"), (tmp_path / "missing", "can't read"), (tmp_path, "can't read")]:
        config.write_text(f'[web]\ntoken_file = "{path}"\n')
        with pytest.raises(PgopsError, match=rf"^web\.token_file: .*{message}"):
            load_token(load_settings(config, env={}), {})
    large = tmp_path / "large"
    large.write_bytes(b"x" * 5000)
    config.write_text(f'[web]\ntoken_file = "{large}"\n')
    with pytest.raises(PgopsError, match="larger than 4096 bytes") as raised:
        load_token(load_settings(config, env={}), {})
    assert "xxx" not in raised.value.message


def test_web_settings_are_checked_on_load(tmp_path):
    config = tmp_path / "pgops.toml"
    config.write_text('[web]\nchart_span = "10s"\n')
    with pytest.raises(PgopsError, match=r"web\.chart_span: must be at least 1m and at most 7d, got 10s"):
        load_settings(config, env={})
    with pytest.raises(PgopsError, match=r"PGOPS_WEB_HISTORY_RUNS: web\.history_runs: must be at least 1"):
        load_settings(env={"PGOPS_WEB_HISTORY_RUNS": "0"})
    # the token's variable is not a setting: it never reaches the settings (nor a message showing them)
    assert "PGOPS_WEB_TOKEN" not in repr(load_settings(env={"PGOPS_WEB_TOKEN": TOKEN})) and TOKEN not in repr(
        load_settings(env={"PGOPS_WEB_TOKEN": TOKEN})
    )
