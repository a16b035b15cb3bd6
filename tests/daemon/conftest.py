"""Helpers for daemon tests: installed pgops schema, a real NOTIFY_SOCKET, free ports, daemon subprocesses."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from pgops import migrate
from pgops.config import DaemonSettings, Settings, load_settings
from pgops.sandbox import free_port
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


wait_for = wait_until  # the daemon tests' name for it


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def daemon_settings(dsn: str, plugin: str, **daemon: object) -> Settings:
    """Settings for a daemon that runs only the test's own jobs."""
    settings = load_settings(env={}, dsn=dsn)
    options = {"jobs": [], "plugins": [f"tests.daemon.sample_jobs:{plugin}"], "health_interval": timedelta(seconds=0.5)}
    return dataclasses.replace(settings, daemon=DaemonSettings(**{**options, **daemon}))


@pytest.fixture
def migrated_dsn(dsn: str) -> str:
    """The test database with pgops' schema installed, as `pgops migrate` leaves it."""
    migrate.upgrade(dsn, load_settings(env={}, dsn=dsn))
    return dsn


class NotifyListener:
    """A unix datagram socket standing in for systemd's; collects the sd_notify messages the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []

    def poll(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def wait(self, key: str, value: str | None = None, timeout: float = 20) -> dict[str, str]:
        def seen() -> dict[str, str] | None:
            self.poll()
            for message in self.messages:
                if key in message and (value is None or value in message[key]):
                    return message
            return None

        return wait_for(seen, timeout, f"{key}={value or '*'} on NOTIFY_SOCKET")

    def count(self, key: str) -> int:
        self.poll()
        return sum(key in message for message in self.messages)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


@dataclasses.dataclass
class DaemonProcess:
    proc: subprocess.Popen[str]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start `python -m pgops daemon` with a config of the test's own jobs; killed at the end if still running."""
    started: list[DaemonProcess] = []

    def start(
        dsn: str,
        plugin: str,
        *,
        env: dict[str, str] | None = None,
        daemon: str = "",
        jobs: Sequence[str] = (),
        tables: str = "",
    ) -> DaemonProcess:
        """`daemon` adds lines to [daemon], `jobs` names built-in jobs to run too, `tables` adds other tables."""
        index = len(started)
        config = tmp_path / f"pgops-{index}.toml"
        config.write_text(
            f"[daemon]\njobs = {json.dumps(list(jobs))}\n"
            f'plugins = ["tests.daemon.sample_jobs:{plugin}"]\nhealth_interval = "0.5s"\n{daemon}\n{tables}'
        )
        port = free_port()
        log_path = tmp_path / f"daemon-{index}.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("PGOPS_", "NOTIFY_", "WATCHDOG_"))}
        environment.update({"PGOPS_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT), **(env or {})})
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pgops", "--config", str(config), "daemon", "--listen", f"127.0.0.1:{port}"],
                cwd=ROOT,
                env=environment,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                text=True,
            )
        process = DaemonProcess(proc, port, log_path)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)
