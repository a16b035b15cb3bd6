"""pgops.crontab: the day of week as cron counts it (0 and 7 are Sunday), whatever APScheduler counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgops.crontab import day_of_week, trigger

SUNDAY, MONDAY = 6, 0  # Python's weekday()


def fire_days(expression: str, count: int = 14) -> list[int]:
    """Python weekdays of the next fire times from a Wednesday."""
    schedule = trigger(expression)
    now, days = datetime(2026, 12, 2, tzinfo=UTC), []
    for _ in range(count):
        now = schedule.get_next_fire_time(None, now + timedelta(seconds=1))
        days.append(now.weekday())
    return days


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("*/2", "sun,tue,thu,sat"),
        ("5-7", "sun,fri,sat"),
        ("sat,sun", "sun,sat"),
        ("*", "*"),
    ],
)
def test_day_of_week_fields_read_as_cron_reads_them(field, names):
    assert day_of_week(field) == names


def test_a_sunday_job_fires_on_sundays():
    assert set(fire_days("0 3 * * 0")) == {SUNDAY}
    assert set(fire_days("0 3 * * 1")) == {MONDAY}
    assert set(fire_days("0 3 * * 1-5")) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("expression", ["* * * *", "0 3 * * 8", "0 3 * * 5-1", "0 3 * * */0", "61 * * * *"])
def test_what_cron_refuses_is_a_value_error(expression):
    with pytest.raises(ValueError):
        trigger(expression)
