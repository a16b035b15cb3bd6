"""Resident memory and CPU of an idle `pgops daemon` with its default jobs, against the targets.

Starts its own sandbox PostgreSQL (in .pgops/bench-daemon-idle), installs pgops' schema, starts
`python -m pgops daemon` and, side by side, a bare interpreter that only imports pgops (the floor any pgops process
pays), then samples both from /proc every second. Prints RSS and CPU with their ratio to the target and to the
bare interpreter.

    .venv/bin/python bench/daemon_idle.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pgops import migrate
from pgops.config import load_settings
from pgops.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
RSS_TARGET_MB = 100.0
CPU_TARGET_PERCENT = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Samples:
    pid: int
    rss_mb: list[float] = field(default_factory=list)
    cpu_ticks: list[int] = field(default_factory=list)

    def take(self) -> None:
        with open(f"/proc/{self.pid}/status") as fh:
            rss_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        self.rss_mb.append(rss_kb / 1024)
        self.cpu_ticks.append(int(fields[11]) + int(fields[12]))  # utime + stime

    def cpu_percent(self, seconds: float) -> float:
        return 100.0 * (self.cpu_ticks[-1] - self.cpu_ticks[0]) / CLOCK_TICKS / seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the daemon did not become healthy at {url} within {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()

    box = Sandbox(ROOT / ".pgops" / "bench-daemon-idle")
    url = box.start()
    migrate.upgrade(url, load_settings(env={}, dsn=url))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGOPS_", "NOTIFY_", "WATCHDOG_"))}
    env["PGOPS_DATABASE_URL"] = url
    daemon = subprocess.Popen(
        [sys.executable, "-m", "pgops", "daemon", "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT / ".pgops",  # no pgops.toml there: the default jobs and settings
        env=env,
        stderr=subprocess.DEVNULL,
    )
    bare = subprocess.Popen(
        [sys.executable, "-c", "import pgops.cli, time; time.sleep(10**6)"], cwd=ROOT, stderr=subprocess.DEVNULL
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz")
        time.sleep(2)  # past startup: measure the idle state only
        measured = {"pgops daemon": Samples(daemon.pid), "bare `import pgops`": Samples(bare.pid)}
        started = time.monotonic()
        for _ in range(args.seconds + 1):
            for samples in measured.values():
                samples.take()
            time.sleep(max(0.0, started + len(next(iter(measured.values())).rss_mb) - time.monotonic()))
        seconds = time.monotonic() - started
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited with {daemon.returncode} during the measurement")
    finally:
        for proc in (daemon, bare):
            proc.terminate()
            proc.wait(15)
        box.stop()

    print(f"idle daemon over {seconds:.0f} s (default jobs; sampled from /proc every second)")
    print(f"{'process':<22}{'RSS max MB':>12}{'vs target':>11}{'CPU %':>8}{'vs target':>11}")
    for name, samples in measured.items():
        rss, cpu = max(samples.rss_mb), samples.cpu_percent(seconds)
        print(f"{name:<22}{rss:>12.1f}{rss / RSS_TARGET_MB:>10.2f}x{cpu:>8.2f}{cpu / CPU_TARGET_PERCENT:>10.2f}x")
    daemon_samples, bare_samples = measured["pgops daemon"], measured["bare `import pgops`"]
    print(
        f"daemon / bare interpreter: RSS {max(daemon_samples.rss_mb) / max(bare_samples.rss_mb):.2f}x; "
        f"targets: RSS < {RSS_TARGET_MB:.0f} MB, CPU < {CPU_TARGET_PERCENT:.0f}% "
        f"({'met' if max(daemon_samples.rss_mb) < RSS_TARGET_MB else 'MISSED'} / "
        f"{'met' if daemon_samples.cpu_percent(seconds) < CPU_TARGET_PERCENT else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
