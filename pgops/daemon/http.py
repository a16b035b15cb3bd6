"""The daemon's HTTP endpoint: `/metrics` (Prometheus, default registry with process metrics) and `/healthz`."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from pgops.errors import PgopsError


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str
    scheduler_running: bool
    database_ok: bool
    running_jobs: list[str]


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9188` for IPv6) → (host, port); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise PgopsError(f"--listen: expected HOST:PORT such as 127.0.0.1:9188, got {text!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise PgopsError(f"--listen: {host!r} is not an IP address (use 127.0.0.1, ::1 or 0.0.0.0)") from None
    return host, int(port)


class HealthServer:
    """A small threaded HTTP server in a background thread; `health()` is evaluated on each /healthz request."""

    def __init__(self, listen: str, health: Callable[[], Health]) -> None:
        host, port = parse_listen(listen)
        handler = _handler(health)
        server_class = ThreadingHTTPServer
        if ":" in host:
            server_class = type("ThreadingHTTPServerV6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        try:
            self.server = server_class((host, port), handler)
        except OSError as exc:
            raise PgopsError(f"can't listen on {listen}: {exc.strerror}") from None
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="pgops-http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port; also after a failed start, when the loop never ran."""
        if self._thread.is_alive():  # shutdown() waits for serve_forever to end: forever if it never started
            self.server.shutdown()
        self.server.server_close()


def _handler(health: Callable[[], Health]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pgops"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
            elif path == "/healthz":
                state = health()
                body = json.dumps(asdict(state)).encode() + b"\n"
                self._send(200 if state.ok else 503, "application/json", body)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes every few seconds: not worth a line
            pass

    return Handler
