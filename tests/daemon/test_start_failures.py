"""A daemon that can't start ends promptly: one error line, exit code 3, never a hang (issue 13, defect 4)."""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest

from pgops.config import load_settings
from pgops.daemon.http import Health, HealthServer
from pgops.errors import PgopsError

DEADLINE = 20  # seconds: a failed start takes about one (connect, check the schema, fail)


def not_json(text: str) -> list[str]:
    """The non-empty lines of a daemon's output that are not JSON log lines: error lines, tracebacks."""
    lines = []
    for line in filter(str.strip, text.splitlines()):
        try:
            if isinstance(json.loads(line), dict):
                continue
        except ValueError:
            pass
        lines.append(line)
    return lines


@pytest.mark.parametrize(
    ("jobs", "tables", "named"),
    [
        (["refresh"], '[refresh]\ninterval = "0s"\n', "refresh.interval"),  # the example
        ([], "", "never"),  # a plugin's job: no config check sees it, the scheduler refuses it after HTTP is bound
    ],
    ids=["refresh-interval-0s", "plugin-job-interval-0"],
)
def test_an_unschedulable_job_ends_the_daemon_with_one_line_and_exit_3(migrated_dsn, start_daemon, jobs, tables, named):
    daemon = start_daemon(migrated_dsn, "unschedulable_jobs", jobs=jobs, tables=tables)
    code = daemon.proc.wait(DEADLINE)  # today's hang: TimeoutExpired
    output = daemon.log_path.read_text()
    assert code == 3, output
    errors = not_json(output)
    assert len(errors) == 1 and errors[0].startswith("pgops: error: ") and named in errors[0], output
    with socket.socket() as probe:  # the HTTP port was released
        probe.bind(("127.0.0.1", daemon.port))


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [("refresh", "interval", '"0s"'), ("pool_report", "interval", "0"), ("advisor", "interval", '"0ms"')],
)
def test_a_zero_job_interval_is_refused_on_load_naming_the_key(tmp_path, table, key, value):
    config = tmp_path / "pgops.toml"
    config.write_text(f"[{table}]\n{key} = {value}\n")
    with pytest.raises(PgopsError, match=rf"^{re.escape(str(config))}: {table}\.{key}: ") as raised:
        load_settings(config, env={})
    assert "\n" not in raised.value.message


def test_stopping_an_http_server_that_never_started_returns_at_once():
    """The failure path of a start stops the HTTP server, whose loop may not have run yet."""
    server = HealthServer("127.0.0.1:0", lambda: Health(True, "ok", True, True, []))
    port = int(server.address.rsplit(":", 1)[1])
    stopper = threading.Thread(target=server.stop, daemon=True)  # daemon: a hang must not keep pytest alive
    stopper.start()
    stopper.join(5)
    assert not stopper.is_alive(), "HealthServer.stop() blocked on a server whose loop never ran"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))
