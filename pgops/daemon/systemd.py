"""systemd integration without libsystemd: the sd_notify datagram protocol and the unit pgops ships.

systemd names a unix datagram socket in `NOTIFY_SOCKET` (a path, or an abstract-namespace name written with a
leading '@'); each datagram is newline-separated `KEY=value` lines (READY=1, STATUS=..., WATCHDOG=1,
STOPPING=1). Outside systemd the variable is unset and notifying does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

log = logging.getLogger(__name__)


def notify_address(value: str) -> str | bytes:
    """The `sendto` address for a NOTIFY_SOCKET value: '@name' is the abstract name '\\0name'."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """Sends sd_notify messages; thread-safe, and a no-op when no NOTIFY_SOCKET is set."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        value = env.get("NOTIFY_SOCKET", "")
        self.address = notify_address(value) if value else None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram with `lines`; True when systemd (or whoever listens) got it."""
        if self.address is None:
            return False
        payload = "\n".join(line.replace("\n", " ") for line in lines).encode()
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.sendto(payload, self.address)
            except OSError as exc:
                if not self._warned:  # a vanished listener must not flood the log every few seconds
                    log.warning("can't notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc.strerror)
                    self._warned = True
                return False
        return True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def watchdog(self, status: str) -> None:
        self.notify("WATCHDOG=1", f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def watchdog_interval(env: Mapping[str, str] | None = None) -> timedelta | None:
    """Half of systemd's WatchdogSec (from WATCHDOG_USEC) when the watchdog is meant for this process."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return timedelta(microseconds=int(usec) / 2)


@dataclass(frozen=True)
class UnitOptions:
    """What differs between installations; the defaults are those of `deploy/pgops.service`."""

    python: str = "/opt/pgops/bin/python"  # the interpreter pgops is installed for (its venv's)
    config: str = "/etc/pgops/pgops.toml"
    environment_file: str = "/etc/pgops/pgops.env"
    listen: str = "127.0.0.1:9188"
    user: str | None = None  # None: a DynamicUser, allocated by systemd for the service's lifetime
    watchdog: timedelta = timedelta(seconds=30)
    stop_timeout: timedelta = timedelta(seconds=15)


def render_unit(options: UnitOptions) -> str:
    """The service unit: Type=notify with a watchdog, restart on failure, and a read-only view of the system."""
    under_home = any(Path(p).is_relative_to("/home") or Path(p).is_relative_to("/root") for p in _paths(options))
    user_lines = f"User={options.user}\n" if options.user else "DynamicUser=yes\n"
    return f"""\
[Unit]
Description=pgops maintenance daemon (refresh, cleanup, pool report, index advice)
Wants=network-online.target
After=network-online.target postgresql.service

[Service]
Type=notify
NotifyAccess=main
ExecStart={options.python} -m pgops --config {options.config} daemon --listen {options.listen}
# PGOPS_DATABASE_URL=postgresql://pgops:secret@db/app, readable by root only
EnvironmentFile={options.environment_file}
{user_lines}WatchdogSec={int(options.watchdog.total_seconds())}
TimeoutStopSec={int(options.stop_timeout.total_seconds())}
KillMode=mixed
Restart=on-failure
RestartSec=5
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome={"read-only" if under_home else "yes"}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=
StateDirectory=pgops
WorkingDirectory=/var/lib/pgops

[Install]
WantedBy=multi-user.target
"""


def _paths(options: UnitOptions) -> list[str]:
    return [options.python, options.config, options.environment_file]
