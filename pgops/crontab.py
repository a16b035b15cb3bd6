"""Crontab expressions as cron means them, for APScheduler (the daemon's scheduler).

APScheduler 3 reads a crontab's day-of-week field with 0 as Monday; cron, and every user, with 0 (and 7) as
Sunday: `0 3 * * 0` would run on Mondays. The field is rewritten as day names, which both read alike.
"""

from __future__ import annotations

from datetime import UTC

from apscheduler.triggers.cron import CronTrigger

_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _day(token: str) -> int:
    token = token.strip().lower()
    if token[:3] in _NAMES and not token.isdigit():
        return _NAMES.index(token[:3])
    number = int(token)
    if not 0 <= number <= 7:
        raise ValueError(f"day of week {token!r} is not 0-7 or a name such as sun")
    return number % 7


def day_of_week(field: str) -> str:
    """A crontab day-of-week field as APScheduler day names: `0` → `sun`, `1-5` → `mon,tue,wed,thu,fri`."""
    if field.strip() in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step {step_text!r} must be at least 1")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-", 1)
            first, last = _day(low), int(high) if high.strip() == "7" else _day(high)
        else:
            first = last = _day(span)
            if step_text:
                last = 6
        if last < first:
            raise ValueError(f"day-of-week range {span!r} runs backwards")
        days |= {day % 7 for day in range(first, last + 1, step)}
    return ",".join(_NAMES[day] for day in sorted(days))


def trigger(expression: str) -> CronTrigger:
    """The trigger for a 5-field crontab, days of the week as cron counts them; ValueError if it is not one."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week(weekday), timezone=UTC)
