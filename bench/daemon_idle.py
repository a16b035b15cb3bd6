"""Resident memory and CPU of an idle daemon with its default jobs, against the targets.

Starts its own sandbox PostgreSQL (in .pgops/bench-daemon-idle) with a database with pgops' schema, then
`pgops daemon` (as the systemd unit starts it) on it, and samples it from /proc every second. Within the minute
refresh (every 5 s) and pool sampling (every 15 s) run and load their modules; a cleanup's first cron slot may
come later, and the advisor runs in a child process of its own. Prints RSS and CPU with their ratio to the
target.

    .venv/bin/python bench/daemon_idle.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pgops import migrate
from pgops.config import load_settings
from pgops.sandbox import Sandbox, free_port, recreate_database

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


def sample_idle(pids: dict[str, subprocess.Popen[bytes]], seconds: int) -> tuple[dict[str, Samples], float]:
    """Sample each process's RSS and CPU from /proc every second, side by side, for `seconds`; refuse a run in
    which one exited. Returns the samples and the seconds they span."""
    measured = {name: Samples(proc.pid) for name, proc in pids.items()}
    started = time.monotonic()
    for tick in range(1, seconds + 2):
        for samples in measured.values():
            samples.take()
        time.sleep(max(0.0, started + tick - time.monotonic()))
    elapsed = time.monotonic() - started
    for name, proc in pids.items():
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode} during the measurement")
    return measured, elapsed


def print_idle(measured: dict[str, Samples], elapsed: float, heading: str) -> None:
    """The idle table: each process's peak RSS and CPU against the targets."""
    print(f"idle daemon over {elapsed:.0f} s{heading} (default jobs; /proc sampled every second; targets RSS < "
          f"{RSS_TARGET_MB:.0f} MB, CPU < {CPU_TARGET_PERCENT:.0f}%)")  # fmt: skip
    width = max(map(len, measured)) + 2
    print(f"{'daemon':<{width}}{'RSS max MB':>12}{'vs target':>11}{'CPU %':>8}{'vs target':>11}")
    for name, samples in measured.items():
        rss, cpu = max(samples.rss_mb), samples.cpu_percent(elapsed)
        verdict = "met" if rss < RSS_TARGET_MB and cpu < CPU_TARGET_PERCENT else "MISSED"
        ratios = f"{rss / RSS_TARGET_MB:>10.2f}x{cpu:>8.2f}{cpu / CPU_TARGET_PERCENT:>10.2f}x"
        print(f"{name:<{width}}{rss:>12.1f}{ratios}  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()

    box = Sandbox(ROOT / ".pgops" / "bench-daemon-idle")
    box.start()
    entries = {"pgops daemon": ["-m", "pgops", "daemon"]}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for index, (name, command) in enumerate(entries.items()):
            url = fresh_database(box, f"bench_daemon_{index}")
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PGOPS_", "NOTIFY_", "WATCHDOG_"))}
            env["PGOPS_DATABASE_URL"] = url
            processes[name] = subprocess.Popen(
                [sys.executable, *command, "--listen", f"127.0.0.1:{port}"],
                cwd=ROOT / ".pgops",  # no pgops.toml there: the default jobs and settings
                env=env,
                stderr=subprocess.DEVNULL,
            )
            wait_healthy(f"http://127.0.0.1:{port}/healthz")
        time.sleep(2)  # past startup: measure the idle state only
        measured, seconds = sample_idle(processes, args.seconds)
    finally:
        for proc in processes.values():
            proc.terminate()
            proc.wait(15)
        box.stop()

    print_idle(measured, seconds, "")


def fresh_database(box: Sandbox, name: str) -> str:
    url = recreate_database(box.url(), name)
    migrate.upgrade(url, load_settings(env={}, dsn=url))
    return url


if __name__ == "__main__":
    main()
