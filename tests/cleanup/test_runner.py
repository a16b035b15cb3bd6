"""A cleanup run end to end (`pgops/cleanup/runner.py`): a killed run, one run per policy at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from pgops.cleanup.runner import run_policy
from pgops.config import Settings
from tests.cleanup.helpers import POLICY, ROOT, counts, make_items


def test_killed_mid_run_keeps_committed_batches_and_next_run_finishes(dsn, conn):
    make_items(conn, expired=4000, live=500)
    command = [sys.executable, "-m", "pgops", "--dsn", dsn, "cleanup", "run", "--table", "public.items"]
    command += ["--expired-column", "expires_at", "--batch-size", "20", "--pause", "300ms"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while counts(conn)[0] == 4000 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    expired_left, live_left = counts(conn)
    assert 0 < expired_left < 4000  # some batches committed, the run did not finish
    assert live_left == 500
    # Only whole batches, oldest first: what is left is exactly the newest `expired_left` expired rows.
    oldest_left = conn.execute("SELECT min(id) FROM items WHERE note = 'old'").fetchone()[0]
    assert oldest_left == 4000 - expired_left + 1

    result = run_policy(dsn, "items", POLICY, Settings())
    assert (result.status, result.rows_deleted) == ("done", expired_left)
    assert counts(conn) == (0, 500)


def test_one_run_per_policy_at_a_time(dsn, conn):
    make_items(conn, expired=10, live=0)
    conn.execute("SELECT pg_advisory_lock(hashtextextended('pgops.cleanup:items', 0))")
    result = run_policy(dsn, "items", POLICY, Settings())
    assert result.status == "skipped" and "another pgops run" in result.reason
    assert counts(conn)[0] == 10
    conn.execute("SELECT pg_advisory_unlock_all()")
    assert run_policy(dsn, "items", POLICY, Settings()).rows_deleted == 10
