"""Resident memory and CPU of an idle daemon with 20 targets, beside a daemon with one, in the same run.

Starts its own sandbox PostgreSQL (in .pgops/bench-daemon-targets) with 20 databases, pgops migrated in each,
then two `pgops daemon` processes with the default jobs at the same time: one on the first database (one URL, as
before targets), one on all 20 (`[targets.tNN] url = ...`). After both answer /healthz it samples both from /proc
every second. Refresh (every 5 s) and pool sampling (every 15 s) run on every target within the minute. Prints
RSS, CPU (% of one core) and threads of each, the 20-target daemon's ratio to the one-target daemon, and both
against the targets (RSS < 150 MB, CPU < 2% for 20 targets).

    .venv/bin/python bench/daemon_targets.py [--targets 20] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.daemon_idle import fresh_database, sample_idle, wait_healthy  # noqa: E402
from pgops.sandbox import Sandbox, free_port  # noqa: E402

RSS_TARGET_MB = 150.0
CPU_TARGET_PERCENT = 2.0


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("Threads:"))


def start_daemon(config: Path, url: str | None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGOPS_", "NOTIFY_", "WATCHDOG_"))}
    env.pop("DATABASE_URL", None)
    if url is not None:
        env["PGOPS_DATABASE_URL"] = url
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgops", "--config", str(config), "daemon", "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.DEVNULL,
    )
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()

    box = Sandbox(ROOT / ".pgops" / "bench-daemon-targets")
    box.start()
    folder = Path(tempfile.mkdtemp(prefix="pgops-bench-targets-"))
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        urls = [fresh_database(box, f"bench_target_{n:02d}") for n in range(args.targets)]
        one = folder / "one.toml"
        one.write_text("")  # the default jobs and settings, on PGOPS_DATABASE_URL
        many = folder / "many.toml"
        many.write_text("".join(f"[targets.t{n:02d}]\nurl = {json.dumps(url)}\n" for n, url in enumerate(urls)))
        for name, (config, url) in {
            "1 target": (one, urls[0]),
            f"{args.targets} targets": (many, None),
        }.items():
            proc, port = start_daemon(config, url)
            processes[name] = proc
            wait_healthy(f"http://127.0.0.1:{port}/healthz")
        time.sleep(2)  # past startup: measure the idle state only
        measured, seconds = sample_idle(processes, args.seconds)
        thread_counts = {name: threads(proc.pid) for name, proc in processes.items()}
    finally:
        for proc in processes.values():
            proc.terminate()
            proc.wait(15)
        box.stop()

    print(f"idle daemons side by side over {seconds:.0f} s (default jobs; /proc sampled every second;")
    print(f"targets for {args.targets}: RSS < {RSS_TARGET_MB:.0f} MB, CPU < {CPU_TARGET_PERCENT:.0f}% of a core)")
    print(f"{'daemon':<12}{'RSS max MB':>11}{'CPU %':>8}{'threads':>9}   vs targets")
    base_rss, base_cpu = None, None
    for name, samples in measured.items():
        rss, cpu = max(samples.rss_mb), samples.cpu_percent(seconds)
        base_rss, base_cpu = base_rss or rss, base_cpu or cpu
        verdict = "met" if rss < RSS_TARGET_MB and cpu < CPU_TARGET_PERCENT else "MISSED"
        print(
            f"{name:<12}{rss:>11.1f}{cpu:>8.2f}{thread_counts[name]:>9}   "
            f"{rss / RSS_TARGET_MB:.2f}x, {cpu / CPU_TARGET_PERCENT:.2f}x  {verdict}"
        )
    name, samples = list(measured.items())[-1]
    rss, cpu = max(samples.rss_mb), samples.cpu_percent(seconds)
    cpu_ratio = f"{cpu / base_cpu:.2f}x" if base_cpu else "n/a (1 target used no CPU)"
    print(f"{name} / 1 target: RSS {rss / base_rss:.2f}x, CPU {cpu_ratio}")


if __name__ == "__main__":
    main()
