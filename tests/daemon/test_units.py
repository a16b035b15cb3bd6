"""Pure pieces of the daemon on hand-made data: schedule periods, lock keys, notify addresses, units, jobs."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgops.config import CleanupPolicy, CleanupSettings, DaemonSettings, Settings, load_settings
from pgops.daemon.guard import run_lock_key, slot_key
from pgops.daemon.http import parse_listen
from pgops.daemon.jobs import Cron, Every, default_jobs, load_jobs
from pgops.daemon.scheduler import Outcome, RunResult, log_level, make_trigger, period_end
from pgops.daemon.systemd import UnitOptions, notify_address, render_unit, watchdog_interval
from pgops.errors import PgopsError
from tests.daemon.conftest import ROOT


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_interval_periods_are_the_same_whenever_a_daemon_started():
    trigger = make_trigger(Every(timedelta(seconds=5)))
    assert period_end(trigger, at("2026-11-23 10:00:01")) == at("2026-11-23 10:00:05")
    assert period_end(trigger, at("2026-11-23 10:00:04.999")) == at("2026-11-23 10:00:05")
    # a run that fires exactly on the slot belongs to the period that starts there
    assert period_end(trigger, at("2026-11-23 10:00:05")) == at("2026-11-23 10:00:10")
    later = make_trigger(Every(timedelta(seconds=5)))  # built later, as by a second daemon
    assert period_end(later, at("2026-11-23 10:00:07")) == period_end(trigger, at("2026-11-23 10:00:06"))


def test_cron_periods_follow_the_expression_in_utc():
    trigger = make_trigger(Cron("*/15 * * * *"))
    assert period_end(trigger, at("2026-11-23 10:00:00")) == at("2026-11-23 10:15:00")
    assert period_end(trigger, at("2026-11-23 10:29:59")) == at("2026-11-23 10:30:00")


def test_bad_schedules_are_one_line_errors():
    with pytest.raises(PgopsError, match="invalid cron schedule"):
        make_trigger(Cron("every five minutes"))
    with pytest.raises(PgopsError, match="must be positive"):
        make_trigger(Every(timedelta(0)))


def test_lock_keys_are_stable_distinct_and_fit_bigint():
    names = ["refresh", "advisor", "cleanup:sessions", "cleanup:idempotency_keys", "pool-sample"]
    keys = [run_lock_key(name) for name in names]
    assert keys == [run_lock_key(name) for name in names]
    assert len(set(keys)) == len(keys)
    assert all(-(2**63) <= key < 2**63 for key in keys)
    period = at("2026-11-23 10:00:05")
    assert slot_key("refresh", period) != slot_key("refresh", period + timedelta(seconds=5))
    assert slot_key("refresh", period) != slot_key("advisor", period)
    assert slot_key("refresh", period) not in keys


def test_notify_address_understands_abstract_sockets():
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@/org/freedesktop/systemd1/notify/123") == b"\0/org/freedesktop/systemd1/notify/123"


def test_watchdog_interval_is_half_of_watchdog_sec_for_this_process_only():
    import os

    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == timedelta(seconds=15)
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == timedelta(seconds=15)
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_parse_listen():
    assert parse_listen("127.0.0.1:9188") == ("127.0.0.1", 9188)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9188", "127.0.0.1:", "127.0.0.1:99999", "db.example.com:9188", ":9188"):
        with pytest.raises(PgopsError, match="--listen"):
            parse_listen(bad)


def test_shipped_unit_is_the_rendered_default():
    assert (ROOT / "deploy" / "pgops.service").read_text() == render_unit(UnitOptions())


def test_unit_for_a_user_install_under_home():
    unit = render_unit(UnitOptions(python="/home/ana/.venv/bin/python", user="ana"))
    assert "User=ana\n" in unit and "DynamicUser" not in unit
    assert "ProtectHome=read-only\n" in unit  # ProtectHome=yes would hide the interpreter and pgops
    assert "ExecStart=/home/ana/.venv/bin/python -m pgops --config /etc/pgops/pgops.toml daemon --listen" in unit
    default = render_unit(UnitOptions())
    for line in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "DynamicUser=yes", "EnvironmentFile=/etc/pgops/pgops.env", "ProtectHome=yes"):  # fmt: skip
        assert f"\n{line}\n" in default


def _settings(**daemon: object) -> Settings:
    policies = {
        "sessions": CleanupPolicy(table="sessions", expired_column="expires_at", schedule="*/10 * * * *"),
        "keys": CleanupPolicy(table="idempotency_keys", expired_column="expires_at", schedule="0 3 * * *"),
    }
    return dataclasses.replace(
        load_settings(env={}),
        cleanup=CleanupSettings(policies=policies, ready_made=["request_logs"]),
        daemon=DaemonSettings(**daemon),
    )


def test_default_jobs_follow_the_settings():
    settings = _settings()
    jobs = {job.name: job for job in default_jobs(settings)}
    # the configured policies and the enabled ready-made ones, as the cleanup module resolves them
    assert list(jobs) == [
        "refresh",
        "cleanup:keys",
        "cleanup:request_logs",
        "cleanup:sessions",
        "pool-sample",
        "advisor",
    ]
    assert jobs["refresh"].schedule == Every(settings.refresh.interval)
    assert jobs["cleanup:sessions"].schedule == Cron("*/10 * * * *")
    assert jobs["advisor"].schedule == Every(settings.advisor.interval)
    assert not jobs["pool-sample"].exclusive and jobs["refresh"].exclusive
    assert [job.name for job in default_jobs(_settings(jobs=["advisor"]))] == ["advisor"]
    with pytest.raises(PgopsError, match="unknown job 'vacuum'"):
        default_jobs(_settings(jobs=["vacuum"]))


def test_plugins_add_jobs_and_names_stay_unique():
    settings = _settings(jobs=["refresh"], plugins=["tests.daemon.sample_jobs:ledger_jobs"])
    assert [job.name for job in load_jobs(settings)] == ["refresh", "tick", "slow"]
    with pytest.raises(PgopsError, match="named 'tick'"):
        load_jobs(_settings(jobs=[], plugins=["tests.daemon.sample_jobs:ledger_jobs"] * 2))
    with pytest.raises(PgopsError, match="module:function"):
        load_jobs(_settings(plugins=["tests.daemon.sample_jobs"]))
    with pytest.raises(PgopsError, match="can't load"):
        load_jobs(_settings(plugins=["tests.daemon.sample_jobs:no_such_factory"]))


def test_daemon_settings_from_the_environment():
    settings = load_settings(env={"PGOPS_DAEMON_JOBS": "refresh,advisor", "PGOPS_DAEMON_STOP_TIMEOUT": "5s"})
    assert settings.daemon.jobs == ["refresh", "advisor"]
    assert settings.daemon.stop_timeout == timedelta(seconds=5)


def test_log_level_keeps_journald_to_the_lines_that_matter():
    nothing = RunResult("refresh", Outcome.ok, 0.01, "nothing due")
    assert log_level(nothing, None) == logging.INFO  # the first run says what the job does
    assert log_level(nothing, nothing) == logging.DEBUG  # every 5 s the same: not worth a line
    refreshed = RunResult("refresh", Outcome.ok, 0.2, "1 refreshed")
    assert log_level(refreshed, nothing) == logging.INFO
    assert log_level(nothing, refreshed) == logging.INFO  # back to quiet: said once
    failed = RunResult("refresh", Outcome.failed, 0.0, "RuntimeError: boom")
    assert log_level(failed, failed) == logging.ERROR  # failures every time
    assert log_level(RunResult("refresh", Outcome.locked, 0.0, "another daemon is running it"), None) == logging.DEBUG
    stopped = RunResult("refresh", Outcome.stopped, 0.0, "daemon stopping")
    assert log_level(stopped, stopped) == logging.INFO


@given(
    interval=st.integers(min_value=1, max_value=6 * 3600),
    now=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)),
    offset=st.floats(min_value=0, max_value=1),
)
def test_daemons_firing_within_one_period_agree_on_it(interval, now, offset):
    """Any two moments of one period (two daemons' clocks firing it) give the same period end, within one interval."""
    trigger = make_trigger(Every(timedelta(seconds=interval)))
    end = period_end(trigger, now)
    assert now < end <= now + timedelta(seconds=interval)
    other_moment = end - timedelta(seconds=interval) + timedelta(seconds=interval * offset * 0.999)
    assert period_end(make_trigger(Every(timedelta(seconds=interval))), other_moment) == end
