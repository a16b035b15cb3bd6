"""The daemon's HTTP endpoint: `/metrics` (Prometheus, default registry with process metrics), `/healthz`, and
the read-only pages (`pgops.web`) on every other path when they are enabled."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from pgops.daemon.failover import TargetHealth
from pgops.errors import PgopsError, first_line

if TYPE_CHECKING:
    from pgops.web import WebPages

log = logging.getLogger(__name__)

# Seconds one read or write of a request may stall before the connection is closed: a scrape or a health check
# sends its request at once, and a client that doesn't must not hold a thread forever.
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str
    scheduler_running: bool
    database_ok: bool
    running_jobs: list[str]
    targets: list[TargetHealth] = field(default_factory=list)  # the server each target's URL leads to now


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

    def __init__(self, listen: str, health: Callable[[], Health], pages: WebPages | None = None) -> None:
        host, port = parse_listen(listen)
        handler = _handler(health, pages)
        server_class = _Server
        if ":" in host:
            server_class = type("_ServerV6", (_Server,), {"address_family": socket.AF_INET6})
        try:
            self.server = server_class((host, port), handler)
        except OSError as exc:
            raise PgopsError(f"can't listen on {listen}: {exc.strerror}") from None
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


def _client(address: tuple[str, int] | tuple[str, int, int, int] | str) -> str:
    if isinstance(address, tuple):
        host, port = address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


def _describe(exc: BaseException | None) -> str:
    """`TimeoutError: timed out`, one line, for a request that failed."""
    if exc is None:
        return "unknown error"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _log_failure(client: str, request: str, error: str, *, bug: bool = False) -> None:
    """The one log line of a failed request. A client that leaves, stalls or sends garbage is routine (info);
    an exception of pgops' own is an error, still one line: a traceback would break the JSON-lines log."""
    request, error = request[:200], error[:300]  # a hostile request line can be 64 kB
    log.log(
        logging.ERROR if bug else logging.INFO,
        "http: %s from %s failed: %s",
        json.dumps(request) if request else "request",
        client,
        error,
        extra={"client": client, "request": request},
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled client never holds up the daemon's exit

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # what the handler did not catch itself (its setup or finish): one line, not socketserver's traceback
        exc = sys.exc_info()[1]
        _log_failure(_client(client_address), "", _describe(exc), bug=not isinstance(exc, OSError))


def _handler(health: Callable[[], Health], pages: WebPages | None = None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pgops"
        timeout = REQUEST_TIMEOUT  # on the socket, for every read and write: a stalled client gets dropped
        _failure_logged = False  # HTTP/1.0: one request per connection, so one failure line per handler

        def handle(self) -> None:
            try:
                super().handle()
            except OSError as exc:  # the client reset the connection or went away mid-answer
                self._failed(_describe(exc))
            except Exception as exc:
                self._failed(_describe(exc), bug=True)

        def do_GET(self) -> None:
            self._answer(with_body=True)

        def do_HEAD(self) -> None:  # curl -I, load balancers' checks: the GET's status and headers
            self._answer(with_body=False)

        def _answer(self, *, with_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY), with_body)
            elif path == "/healthz":
                state = health()
                body = json.dumps(asdict(state)).encode() + b"\n"
                self._send(200 if state.ok else 503, "application/json", body, with_body)
            elif pages is not None:
                try:
                    page = pages.answer(path, self.headers.get("Authorization"))
                except Exception as exc:  # a page that failed: a 500 saying so, not a dropped connection
                    self._failed(_describe(exc), bug=True)
                    body = f"pgops: this page failed: {first_line(exc)}\n".encode()
                    self._send(500, "text/plain; charset=utf-8", body, with_body)
                    return
                self._send(page.code, page.content_type, page.body, with_body, page.headers)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n", with_body)

        def _send(
            self, code: int, content_type: str, body: bytes, with_body: bool, headers: tuple[tuple[str, str], ...] = ()
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def _failed(self, error: str, *, bug: bool = False) -> None:
            if not self._failure_logged:
                self._failure_logged = True
                _log_failure(_client(self.client_address), getattr(self, "requestline", ""), error, bug=bug)

        def log_error(self, format: str, *args: object) -> None:
            # BaseHTTPRequestHandler's own failures: a timeout, a malformed request (400), a method (501)
            if args and isinstance(args[-1], TimeoutError):
                self._failed(f"timed out: nothing received or sent for {self.timeout:g}s")
            else:
                self._failed(format % args)

        def log_message(self, format: str, *args: object) -> None:  # scrapes every few seconds: not worth a line
            pass

    return Handler
