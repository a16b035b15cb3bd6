"""The daemon's HTTP endpoint under clients that misbehave: one JSON log line per failed request, never a
traceback; stalled connections closed by a timeout; HEAD answered like GET (issue 13, defect 9)."""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest

from tests.daemon.conftest import DaemonProcess, http_get, wait_for

STALL_LIMIT = 10  # seconds a stalled connection may hold its thread (the server's timeout is a few seconds)


def serving(start_daemon, migrated_dsn: str, notify_socket) -> DaemonProcess:
    daemon = start_daemon(migrated_dsn, "no_jobs", env={"NOTIFY_SOCKET": str(notify_socket.path)})
    notify_socket.wait("READY", "1")
    return daemon


def http_failures(daemon: DaemonProcess) -> list[dict[str, object]]:
    return [entry for entry in daemon.log() if entry.get("logger") == "pgops.daemon.http"]


def stopped_log(daemon: DaemonProcess) -> list[dict[str, object]]:
    """SIGTERM, exit 0, and every line of the output a JSON object: no traceback, no stray print."""
    daemon.terminate()
    assert daemon.proc.wait(15) == 0
    text = daemon.log_path.read_text()
    assert "Traceback" not in text, text
    entries = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(entry, dict) for entry in entries)
    return entries


def reset(port: int, payload: bytes) -> None:
    """Send `payload` and leave with a TCP reset, as a client killed or timed out mid-request does."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.sendall(payload)


def test_clients_that_leave_early_get_one_json_line_each(migrated_dsn, start_daemon, notify_socket):
    daemon = serving(start_daemon, migrated_dsn, notify_socket)
    payloads = [
        b"GET /metrics HTTP/1.1\r\nHost: pgops\r\n\r\n",  # a whole request, gone before the answer
        b"GET /healthz HTTP/1.1\r\nHost: pg",  # half the headers
        b"GET /metr",  # half the request line
        b"",  # nothing at all
    ]
    for payload in payloads:
        reset(daemon.port, payload)
    # The two cut off mid-request always fail; the whole request may be answered before its reset arrives, and
    # a connection reset before it was accepted may never reach the server: on a loaded machine, either happens.
    wait_for(
        lambda: len(http_failures(daemon)) >= 2 or "Traceback" in daemon.log_path.read_text(),
        10,
        "a log line per reset connection",
    )
    assert http_get(f"{daemon.base_url}/healthz")[0] == 200  # still serving
    entries = stopped_log(daemon)
    failures = [entry for entry in entries if entry.get("logger") == "pgops.daemon.http"]
    assert 2 <= len(failures) <= len(payloads), failures  # one line per failed request, not one per frame
    assert all("ConnectionResetError" in str(entry["msg"]) for entry in failures), failures


@pytest.mark.timing
def test_a_stalled_connection_is_closed_by_the_server(migrated_dsn, start_daemon, notify_socket):
    daemon = serving(start_daemon, migrated_dsn, notify_socket)
    silent = socket.create_connection(("127.0.0.1", daemon.port))
    partial = socket.create_connection(("127.0.0.1", daemon.port))
    partial.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the blank line that ends the headers
    opened = time.monotonic()
    try:
        assert http_get(f"{daemon.base_url}/healthz")[0] == 200  # a stalled client holds only its own thread
        for client in (silent, partial):
            client.settimeout(STALL_LIMIT + 2)
            assert client.recv(1024) == b""  # closed by the server (with no server timeout: TimeoutError)
        assert time.monotonic() - opened < STALL_LIMIT
    finally:
        silent.close()
        partial.close()
    wait_for(lambda: len(http_failures(daemon)) >= 2, 5, "a log line per timed-out connection")
    failures = [entry for entry in stopped_log(daemon) if entry.get("logger") == "pgops.daemon.http"]
    assert len(failures) == 2 and all("timed out" in str(entry["msg"]) for entry in failures), failures


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and every byte after them, read to the end: what the server really sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(request)
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def test_head_answers_like_get_without_a_body(migrated_dsn, start_daemon, notify_socket):
    daemon = serving(start_daemon, migrated_dsn, notify_socket)
    for path in ("/healthz", "/metrics", "/nothing"):
        status, headers, body = exchange(daemon.port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
        head_status, head_headers, head_body = exchange(daemon.port, f"HEAD {path} HTTP/1.0\r\n\r\n".encode())
        assert (head_status, head_body) == (status, b""), path
        assert status == (404 if path == "/nothing" else 200)
        assert head_headers["content-type"] == headers["content-type"]
        if path != "/metrics":  # the metrics change between two scrapes (the process' CPU time)
            assert head_headers["content-length"] == headers["content-length"] == str(len(body))
    assert http_failures(daemon) == []
    stopped_log(daemon)


def test_a_page_that_fails_is_a_500_saying_so_not_a_dropped_connection():
    """A page's own bug (an import, a file it can't read) answers 500 with one line, and is logged once."""
    from pgops.daemon.http import Health, HealthServer
    from pgops.sandbox import free_port

    class Failing:
        def answer(self, path: str, authorization: str | None) -> object:
            raise RuntimeError("the page broke\nsecond line")

    health = Health(ok=True, reason="", scheduler_running=True, database_ok=True, running_jobs=[])
    server = HealthServer(f"127.0.0.1:{free_port()}", lambda: health, Failing())  # type: ignore[arg-type]
    server.start()
    try:
        code, body = http_get(f"http://{server.address}/workload")
    finally:
        server.stop()
    assert (code, body) == (500, "pgops: this page failed: the page broke\n")
