"""Settings from `pgops.toml` and the environment, in one place.

Every section is a frozen dataclass; the loader walks the TOML tables against the dataclass fields, so an
unknown key, a value of the wrong type, or one out of its range (each numeric field's `Bounds` in its metadata, a
field's own check, a section's ordered pairs such as warning <= critical) is rejected with one line naming the key
and the file (or the environment variable) before any job runs. Environment variables `PGOPS_<SECTION>_<KEY>`
override the file (e.g. `PGOPS_REFRESH_DEBOUNCE=10s`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from pgops.errors import ConfigError, PgopsError

log = logging.getLogger("pgops.config")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_FACTORS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}

# Far beyond any setting, and well inside what timedelta and PostgreSQL's interval and timestamp arithmetic take
# (`now() - older_than` must stay a valid timestamp), so a huge value is refused here instead of overflowing later.
MAX_DURATION = timedelta(days=36500)
MAX_SIZE = 1024**5  # 1024TB: more than any index budget, and exact as a float
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
MAX_TIMEOUT = timedelta(milliseconds=INT4_MAX)  # PostgreSQL's timeouts are int4 milliseconds
MAX_TEXT = 100  # a duration or size longer than this is a mistake; it also keeps parsing linear
MAX_CONFIG_BYTES = 1024**2


def _shown(value: object) -> str:
    """A value for a one-line message: repr (newlines escaped), cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_duration(value: timedelta) -> str:
    """`1h30m`, `250ms`: the same syntax parse_duration reads."""
    ms = round(value.total_seconds() * 1000)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _number(value: float | int) -> float:
    """A float for comparisons; an int too large for one (TOML ints have no limit) is infinite, out of any range."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _duration_in_range(seconds: float, text: object) -> timedelta:
    if seconds < 0:
        raise ValueError(f"a duration can't be negative: {_shown(text)}")
    if not math.isfinite(seconds) or seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{_shown(text)} is out of range: at most {format_duration(MAX_DURATION)} (100 years)")
    return timedelta(seconds=seconds)


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Read `250ms`, `30s`, `5m`, `1h30m`, `2d` or a plain number of seconds, at most MAX_DURATION."""
    if isinstance(text, timedelta):
        return _duration_in_range(text.total_seconds(), text)
    if isinstance(text, int | float) and not isinstance(text, bool):
        return _duration_in_range(_number(text), text)
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise ValueError(f"expected a duration such as 30s or 5m, got {_shown(text)}")
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return _duration_in_range(float(value), text)
    parts = _DURATION_PART.findall(value)
    if not parts or _DURATION_PART.sub("", value).strip():
        raise ValueError(f"expected a duration such as 30s, 5m or 1h30m, got {_shown(text)}")
    return _duration_in_range(sum(float(n) * _UNIT_SECONDS[u.lower()] for n, u in parts), text)


def parse_size(text: str | int) -> int:
    """Read `500MB`, `2GB`, `100kB` or a plain number of bytes, at most MAX_SIZE."""
    if isinstance(text, int) and not isinstance(text, bool):
        number = _number(text)
    else:
        match = (
            re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb)?\s*", text, re.IGNORECASE)
            if (isinstance(text, str) and len(text) <= MAX_TEXT)
            else None
        )
        if not match:
            raise ValueError(f"expected a size such as 500MB or 2GB, got {_shown(text)}")
        number = float(match[1]) * _SIZE_FACTORS[(match[2] or "b").lower()]
    if number < 0:
        raise ValueError(f"a size can't be negative: {_shown(text)}")
    if number > MAX_SIZE:  # inf included
        raise ValueError(f"{_shown(text)} is out of range: at most 1024TB")
    return int(number)


ByteSize = typing.NewType("ByteSize", int)  # a field of this type reads `500MB` as well as a number of bytes


def _show(value: object) -> str:
    """A setting's value as the file would write it, cut short (a TOML integer can have any number of digits)."""
    if isinstance(value, timedelta):
        return format_duration(value)
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting may take; the loader checks every field's bounds (field metadata) on load."""

    low: Any = None
    high: Any = None
    above: bool = False  # `low` itself is refused: the value must be more than it
    below: bool = False  # `high` itself is refused
    zero: bool = False  # 0 is also allowed (a timeout of 0 means none)

    def problem(self, value: Any) -> str | None:
        if self.zero and not value:
            return None
        too_low = self.low is not None and (value <= self.low if self.above else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.below else value > self.high)
        return f"must be {self.describe()}, got {_show(value)}" if too_low or too_high else None

    def describe(self) -> str:
        low = None if self.low is None else f"{'more than' if self.above else 'at least'} {_show(self.low)}"
        high = None if self.high is None else f"{'less than' if self.below else 'at most'} {_show(self.high)}"
        text = " and ".join(part for part in (low, high) if part)
        return f"0 (none) or {text}" if self.zero else text


# Field metadata: `field(default=..., metadata=COUNT)`. Every int, float and timedelta field has bounds (a test
# checks it), so a new setting can't slip in unchecked.
COUNT = {"bounds": Bounds(1, INT4_MAX)}  # a size or count where 0 makes no sense
COUNT_OR_ZERO = {"bounds": Bounds(0, INT4_MAX)}
PERIOD = {"bounds": Bounds(timedelta(0), MAX_DURATION, above=True)}  # an interval or limit that must pass time
DURATION = {"bounds": Bounds(timedelta(0), MAX_DURATION)}
TIMEOUT = {"bounds": Bounds(timedelta(milliseconds=1), MAX_TIMEOUT, zero=True)}  # sub-ms would round to 0 = none
RATIO = {"bounds": Bounds(0.0, 1.0)}  # of a limit in use: 0 warns on any use at all


def pg_cron_schedule(text: str) -> None:
    """Refuse what pg_cron's `cron.schedule` refuses (its vixie-cron parser and `N seconds`), checked on load so a
    typo fails now instead of inside `pgops migrate`. Stricter in two ways that pg_cron accepts silently: a sixth
    field (pg_cron ignores it, so a seconds field would shift every other one) and a range that runs backwards
    (it never fires)."""
    value = text.strip(" \t")
    if not value:
        return  # no pg_cron job on purpose
    seconds = re.fullmatch(r"(\d{1,9})\s*seconds?", value, re.IGNORECASE)
    if seconds:
        if not 1 <= int(seconds[1]) <= 59:
            raise ValueError(f"{_shown(text)}: pg_cron takes 1 to 59 seconds")
        return
    if value.startswith("@"):
        if value[1:] not in ("reboot", "restart", "yearly", "annually", "monthly", "weekly", "daily", "midnight",
                             "hourly"):  # fmt: skip
            raise ValueError(f"{_shown(text)}: not one of pg_cron's @hourly, @daily, @weekly, @monthly, @yearly")
        return
    fields = re.split(r"[ \t]+", value)
    if len(fields) != 5:
        raise ValueError(
            f"{_shown(text)}: expected 5 crontab fields (minute hour day-of-month month day-of-week, e.g. "
            f"'*/5 * * * *') or '[1-59] seconds', got {len(fields)}"
        )
    for item, spec in zip(fields, _CRON_FIELDS, strict=True):
        for part in item.split(","):
            problem = _cron_part(part, *spec)
            if problem:
                raise ValueError(f"{_shown(text)}: {spec[0]} {part!r}: {problem}")


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


def _cron_part(part: str, _: str, low: int, high: int, names: tuple[str, ...]) -> str | None:
    """One element of a crontab list: `*`, `N`, `N-M`, `*/S` or `N-M/S` (month and day names too)."""
    match = re.fullmatch(r"(?:(\*)|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/([0-9]+))?", part, re.IGNORECASE)
    if not match:
        return "expected *, N, N-M, */S or N-M/S"
    star, first, last, step = match.groups()
    if step is not None and (first and last is None):
        return "a step needs * or a range (N-M/S)"
    if step is not None and (len(step) > 9 or int(step) == 0):
        return "the step must be at least 1"
    values = []
    for token in (first, last):
        if token is None:
            continue
        if token.lower() in names:
            values.append(names.index(token.lower()) + low)
        elif token.isdigit() and len(token) <= 9 and low <= int(token) <= high:
            values.append(int(token))
        else:
            return f"{token!r} is not {low}-{high}" + (f" or a name such as {names[0]}" if names else "")
    if star is None and len(values) == 2 and values[0] > values[1]:
        return "the range runs backwards, so it never matches"
    return None


def crontab(text: str) -> None:
    """A crontab the daemon's scheduler (APScheduler) accepts, checked with the same parser it uses."""
    from pgops.crontab import trigger  # APScheduler: the CLI and the daemon load it anyway

    try:
        trigger(text)
    except ValueError as exc:
        raise ValueError(
            f"{_shown(text)} is not a crontab expression (minute hour day month day-of-week): {exc}"
        ) from None


def listen_address(text: str) -> None:
    """`HOST:PORT`, or empty for no HTTP endpoint: the daemon's own parser."""
    if text:
        from pgops.daemon.http import parse_listen  # not at import: config is loaded by every command

        try:
            parse_listen(text)
        except PgopsError as exc:
            raise ValueError(exc.message.removeprefix("--listen: ")) from None


def not_empty(text: str) -> None:
    if not text.strip():
        raise ValueError("must not be empty")


@dataclass(frozen=True)
class DatabaseSettings:
    url: str | None = None
    statement_timeout: timedelta = field(default=timedelta(seconds=30), metadata=TIMEOUT)
    lock_timeout: timedelta = field(default=timedelta(seconds=5), metadata=TIMEOUT)
    idle_in_transaction_session_timeout: timedelta = field(default=timedelta(seconds=60), metadata=TIMEOUT)
    # libpq counts whole seconds, and 0 would wait forever
    connect_timeout: timedelta = field(
        default=timedelta(seconds=10), metadata={"bounds": Bounds(timedelta(seconds=1), MAX_TIMEOUT)}
    )
    application_name: str = "pgops"


@dataclass(frozen=True)
class RefreshSettings:
    ORDERED: ClassVar = (("debounce", "max_wait"),)

    debounce: timedelta = field(default=timedelta(seconds=30), metadata=DURATION)
    max_wait: timedelta = field(default=timedelta(minutes=5), metadata=DURATION)
    interval: timedelta = field(default=timedelta(seconds=5), metadata=PERIOD)
    # empty: schedule no pg_cron job (the daemon processes refreshes)
    cron_schedule: str = field(default="* * * * *", metadata={"check": pg_cron_schedule})
    # ignored since migration 0004 (the cleanup policy cron_job_run_details trims); kept so old files load
    cron_keep_history: timedelta = field(default=timedelta(hours=1), metadata=DURATION)
    statement_timeout: timedelta = field(default=timedelta(minutes=30), metadata=TIMEOUT)
    lock_timeout: timedelta = field(default=timedelta(seconds=5), metadata=TIMEOUT)


@dataclass(frozen=True)
class CleanupPolicy:
    table: str = field(metadata={"check": not_empty})
    expired_column: str | None = None
    older_than_column: str | None = None
    older_than: timedelta | None = field(default=None, metadata=DURATION)
    where: str | None = None
    batch_size: int = field(default=1000, metadata=COUNT)
    target_batch_duration: timedelta = field(default=timedelta(milliseconds=200), metadata=PERIOD)
    # batches back to back; the health throttle is what pauses them
    pause: timedelta = field(default=timedelta(0), metadata=DURATION)
    max_runtime: timedelta = field(default=timedelta(minutes=10), metadata=PERIOD)
    max_rows: int | None = field(default=None, metadata={"bounds": Bounds(1, INT8_MAX)})
    schedule: str = field(default="*/5 * * * *", metadata={"check": crontab})
    database: str | None = None  # another database on the same server; "@cron" = pg_cron's cron.database_name
    if_exists: bool = False  # skip quietly (not an error) when the table does not exist


@dataclass(frozen=True)
class CleanupSettings:
    policies: dict[str, CleanupPolicy] = field(default_factory=dict)
    max_replication_lag: timedelta = field(default=timedelta(seconds=30), metadata=DURATION)
    max_lock_waiters: int = field(default=10, metadata=COUNT_OR_ZERO)
    statement_timeout: timedelta = field(default=timedelta(seconds=30), metadata=TIMEOUT)
    lock_timeout: timedelta = field(default=timedelta(seconds=2), metadata=TIMEOUT)
    ready_made: list[str] = field(
        default_factory=lambda: ["idempotency_keys", "sessions", "request_logs", "cron_job_run_details"]
    )
    throttle_pause: timedelta = field(default=timedelta(seconds=5), metadata=PERIOD)  # 0 would spin on the checks
    throttle_on_autovacuum: bool = True


@dataclass(frozen=True)
class AdvisorSettings:
    # a workload that ran a few times already yields advice; one-off statements don't
    min_calls: int = field(default=2, metadata={"bounds": Bounds(0, INT8_MAX)})
    min_total_time: timedelta = field(default=timedelta(0), metadata=DURATION)
    top: int = field(default=500, metadata=COUNT)
    max_indexes: int = field(default=10, metadata=COUNT)
    max_size: ByteSize = field(default=ByteSize(10 * 1024**3), metadata={"bounds": Bounds(1, MAX_SIZE)})
    interval: timedelta = field(default=timedelta(hours=6), metadata=PERIOD)
    output: Path | None = None
    statement_timeout: timedelta = field(default=timedelta(seconds=10), metadata=TIMEOUT)
    # each index (or extension of one) must save this share of the workload's time...
    min_saving: float = field(default=0.01, metadata={"bounds": Bounds(0.0, 1.0, below=True)})
    # ...and, where its time was measured, this multiple of the share of the database's size it adds (2: an index
    # that grows the database by 5% must save 10% of the measured time), alike at any scale; 0 turns it off.
    # Twice, not once: the saving is estimated from plan costs, which overstate it on analytic plans.
    min_saving_per_size: float = field(default=2.0, metadata={"bounds": Bounds(0.0, 1000.0)})
    # ...and where the weights are plan costs (or min_saving_per_size is 0), this share per MB it adds
    min_saving_per_mb: float = field(default=0.0005, metadata={"bounds": Bounds(0.0, 1.0, below=True)})
    # time one index entry costs a write, to weigh write overhead against savings
    write_cost_ms: float = field(default=0.01, metadata={"bounds": Bounds(0.0, 1000.0)})
    lock_timeout: timedelta = field(default=timedelta(seconds=5), metadata=TIMEOUT)  # the script's SET lock_timeout
    build_timeout: timedelta = field(default=timedelta(0), metadata=TIMEOUT)  # each index build's; 0 = none


@dataclass(frozen=True)
class PoolReportSettings:
    ORDERED: ClassVar = (("warning", "critical"),)

    warning: float = field(default=0.75, metadata=RATIO)
    critical: float = field(default=0.90, metadata=RATIO)
    idle_in_transaction: timedelta = field(default=timedelta(seconds=30), metadata=PERIOD)
    long_transaction: timedelta = field(default=timedelta(minutes=5), metadata=PERIOD)
    long_query: timedelta = field(default=timedelta(minutes=1), metadata=PERIOD)
    xmin_age: int = field(default=1_000_000, metadata=COUNT)  # transaction ids: an age is below 2^31
    interval: timedelta = field(default=timedelta(seconds=15), metadata=PERIOD)
    top_applications: int = field(default=10, metadata=COUNT)
    pgbouncer_url: str | None = None
    # idle sessions of one application and client that count as pool bloat ...
    idle_pool_sessions: int = field(default=20, metadata=COUNT)
    idle_pool_age: timedelta = field(default=timedelta(hours=1), metadata=DURATION)  # ... when the oldest is this old
    # daemon: idle connections growing across this many samples (growth needs two to compare)
    idle_growth_samples: int = field(default=3, metadata={"bounds": Bounds(2, INT4_MAX)})
    # for pool sizing; unset: this machine's cores when the server is local
    server_cores: int | None = field(default=None, metadata=COUNT)
    mask_queries: bool = True
    # a query is cut to this many characters (at least 4, for the ellipsis); PostgreSQL keeps at most 1MB of it
    query_length: int = field(default=200, metadata={"bounds": Bounds(4, 1024**2)})
    statement_timeout: timedelta = field(default=timedelta(seconds=5), metadata=TIMEOUT)


SIZE = {"bounds": Bounds(1, MAX_SIZE)}


@dataclass(frozen=True)
class StatusSettings:
    ORDERED: ClassVar = (("slot_wal_warning", "slot_wal_critical"), ("replay_lag_warning", "replay_lag_critical"))

    # WAL a replication slot keeps on the primary's disk: an inactive slot keeps it until the disk fills
    slot_wal_warning: ByteSize = field(default=ByteSize(1024**3), metadata=SIZE)
    slot_wal_critical: ByteSize = field(default=ByteSize(10 * 1024**3), metadata=SIZE)
    # how far a standby's replay is behind the primary, in time
    replay_lag_warning: timedelta = field(default=timedelta(minutes=1), metadata=PERIOD)
    replay_lag_critical: timedelta = field(default=timedelta(minutes=10), metadata=PERIOD)


@dataclass(frozen=True)
class WorkloadSettings:
    """`pgops workload`: how many statements to show, and the thresholds a statement must pass, all of them, to be
    an N+1 suspect (or a heavy statement)."""

    ORDERED: ClassVar = (("suspect_max_mean_time", "heavy_mean_time"),)

    top: int = field(default=10, metadata=COUNT)
    # an N+1 suspect is called at least this often ...
    suspect_min_calls: int = field(default=1000, metadata={"bounds": Bounds(1, INT8_MAX)})
    # ... returns about one row per call (a lookup by key; 0 when it finds nothing) ...
    suspect_max_rows_per_call: float = field(default=1.5, metadata={"bounds": Bounds(0.0, 1e9)})
    # ... each call is this fast ...
    suspect_max_mean_time: timedelta = field(default=timedelta(milliseconds=1), metadata=PERIOD)
    # ... and all its calls together take at least this share of all statement time
    suspect_min_share: float = field(default=0.01, metadata=RATIO)
    # a statement whose calls take this long on average is heavy: its cost is in each call, not in their number
    heavy_mean_time: timedelta = field(default=timedelta(milliseconds=20), metadata=PERIOD)
    mask_queries: bool = True
    # a query is cut to this many characters (at least 4, for the ellipsis)
    query_length: int = field(default=200, metadata={"bounds": Bounds(4, 1024**2)})
    statement_timeout: timedelta = field(default=timedelta(seconds=10), metadata=TIMEOUT)


@dataclass(frozen=True)
class DaemonSettings:
    ORDERED: ClassVar = (("pool_min_size", "pool_max_size"),)

    listen: str = field(default="127.0.0.1:9188", metadata={"check": listen_address})
    # connections (and job threads); PostgreSQL's own limit on max_connections is 262143
    pool_min_size: int = field(default=1, metadata={"bounds": Bounds(0, 262_143)})
    pool_max_size: int = field(default=4, metadata={"bounds": Bounds(1, 262_143)})
    misfire_grace_time: timedelta = field(default=timedelta(seconds=60), metadata=PERIOD)
    # SIGTERM → running batch finished or abandoned, then exit
    stop_timeout: timedelta = field(default=timedelta(seconds=8), metadata=DURATION)
    # health check, STATUS= and WATCHDOG=1 (or half WatchdogSec)
    health_interval: timedelta = field(default=timedelta(seconds=10), metadata=PERIOD)
    jobs: list[str] = field(default_factory=lambda: ["refresh", "cleanup", "pool-sample", "advisor"])  # built-ins
    plugins: list[str] = field(default_factory=list)  # "module:function" returning extra jobs


TARGET_NAME = re.compile(r"[a-z0-9_-]{1,63}")  # a plain word: a metrics label, a JSON key, a heading


@dataclass(frozen=True)
class Target:
    """One server pgops works on: `[targets.NAME] url = ...`. Its role (primary or standby) is read from the
    server each time, never configured: a failover changes it."""

    name: str
    url: str = field(repr=False)  # holds the password


def _targets(value: Any) -> tuple[Target, ...]:
    """`[targets.NAME]` tables, in file order; each error names `targets.NAME[.url]`."""
    from pgops.db import check_url  # db imports this module

    if not isinstance(value, Mapping):
        raise ConfigError("targets", f"expected a table of [targets.NAME] tables, got {_shown(value)}")
    found = []
    for name, table in value.items():
        where = f"targets.{name}"
        if not TARGET_NAME.fullmatch(name):
            raise ConfigError(
                f"targets.{_shown(name)}", "a target's name is 1 to 63 of a-z, 0-9, '_' and '-' (it labels metrics)"
            )
        if not isinstance(table, Mapping):
            raise ConfigError(where, f"expected a table with url = ..., got {_shown(table)}")
        unknown = sorted(set(table) - {"url"})
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", "unknown key (known here: url)")
        if "url" not in table:
            raise ConfigError(where, "missing required key url")
        url = table["url"]
        try:
            url = _scalar(url, str)
            not_empty(url)
            check_url(url)
        except ValueError as exc:
            raise ConfigError(f"{where}.url", str(exc)) from None
        except PgopsError as exc:
            raise ConfigError(f"{where}.url", exc.message) from None
        found.append(Target(name, url))
    return tuple(found)


def token_file(path: Path) -> None:
    """The web pages' token file: checked on load so a typo fails now, not when the daemon starts serving."""
    if not str(path).strip():
        raise ValueError("must not be empty")


@dataclass(frozen=True)
class WebSettings:
    """The daemon's read-only pages, served on its HTTP listener beside /metrics and /healthz."""

    enabled: bool = True
    # the token a request must carry when the daemon listens beyond loopback (else PGOPS_WEB_TOKEN); the file
    # holds the token alone, and its text is never logged
    token_file: Path | None = field(default=None, metadata={"check": token_file})
    # how far back the connections chart reaches: the daemon keeps that many pool samples in memory
    chart_span: timedelta = field(
        default=timedelta(hours=6), metadata={"bounds": Bounds(timedelta(minutes=1), timedelta(days=7))}
    )
    # cleanup runs, refresh outcomes and job results kept in memory for the pages
    history_runs: int = field(default=200, metadata={"bounds": Bounds(1, 100_000)})


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    refresh: RefreshSettings = field(default_factory=RefreshSettings)
    cleanup: CleanupSettings = field(default_factory=CleanupSettings)
    advisor: AdvisorSettings = field(default_factory=AdvisorSettings)
    pool_report: PoolReportSettings = field(default_factory=PoolReportSettings)
    status: StatusSettings = field(default_factory=StatusSettings)
    workload: WorkloadSettings = field(default_factory=WorkloadSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    web: WebSettings = field(default_factory=WebSettings)
    source: str = "defaults"  # where the settings came from, for messages
    # not keys of a section: `[targets.NAME]` tables, and whether the URL came from --dsn or the environment
    configured_targets: tuple[Target, ...] = ()
    url_given: bool = False

    @property
    def dsn(self) -> str:
        """The URL of commands that work on one server: --dsn or the environment, else `[database] url`, else the
        first `[targets.NAME]`."""
        if self.database.url:
            return self.database.url
        if self.configured_targets:
            return self.configured_targets[0].url
        raise PgopsError(
            "no database URL: pass --dsn, set PGOPS_DATABASE_URL or DATABASE_URL, "
            "or set [database] url or [targets.NAME] url in pgops.toml"
        )

    def targets(self) -> tuple[Target, ...]:
        """The servers to work on, in file order; without `[targets]`, or with a URL given by --dsn or the
        environment, that one URL as the target named "default"."""
        if self.configured_targets and not self.url_given:
            return self.configured_targets
        return (Target("default", self.dsn),)

    def target(self, name: str) -> Target:
        """The target of this name, or the config error listing the known names."""
        known = self.targets()
        for target in known:
            if target.name == name:
                return target
        names = ", ".join(t.name for t in known)
        if self.configured_targets and self.url_given:
            raise PgopsError(
                f"no target named {_shown(name)}: a URL from --dsn, PGOPS_DATABASE_URL or DATABASE_URL is the "
                f"only target, named default ({self.source} names {', '.join(t.name for t in self.configured_targets)})"
            )
        raise PgopsError(f"{self.source}: no target named {_shown(name)} (known: {names})")


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Turn a TOML or environment value into the type the dataclass field declares."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(where, f"expected a table, got {_shown(value)}")
        return _build(hint, value, where)
    if origin is dict:
        _, value_type = typing.get_args(hint)
        if not isinstance(value, Mapping):
            raise ConfigError(where, f"expected a table, got {_shown(value)}")
        return {k: _convert(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(where, f"expected a list, got {_shown(value)}")
        return [_convert(v, item_type, where) for v in value]
    try:
        return _scalar(value, hint)
    except (TypeError, ValueError) as exc:
        raise ConfigError(where, str(exc)) from None


def _scalar(value: Any, hint: Any) -> Any:
    if hint is timedelta:
        return parse_duration(value)
    if hint is ByteSize:
        return parse_size(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {_shown(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        # 20 digits hold any int8; longer is out of every range (and int() refuses over 4300 digits)
        if not isinstance(value, str) or not re.fullmatch(r"\s*-?\d{1,20}\s*", value):
            raise ValueError(f"expected a whole number, got {_shown(value)}")
        return int(value)
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(_number(value)):
            return float(value)
        if not isinstance(value, str) or not re.fullmatch(r"\s*-?\d{1,20}(\.\d{0,20})?\s*", value):
            raise ValueError(f"expected a number, got {_shown(value)}")
        return float(value)
    if hint is str or hint is Path:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_shown(value)}")
        if "\0" in value:  # PostgreSQL and the file system can't take one: refused here, not mid-job
            raise ValueError(f"a NUL character is not allowed, got {_shown(value)}")
        return value if hint is str else Path(value).expanduser()
    raise TypeError(f"unsupported settings type {hint!r}")  # a bug in pgops, not in the file


def _validate(obj: Any, where: str, given: Mapping[str, Any]) -> None:
    """Every field's bounds and check (from its metadata), then the class's ordered pairs (`warning` ≤ `critical`);
    a pair names the key the file or environment gave (the first of the two when it gave both)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        try:
            bounds = f.metadata.get("bounds")
            problem = bounds.problem(value) if bounds else None
            if problem:
                raise ValueError(problem)
            if f.metadata.get("check"):
                f.metadata["check"](value)
        except ValueError as exc:
            raise ConfigError(_key(where, f.name), str(exc)) from None
    for low, high in getattr(obj, "ORDERED", ()):
        small, large = getattr(obj, low), getattr(obj, high)
        if small > large:
            blame = low if low in given or high not in given else high
            raise ConfigError(
                _key(where, blame), f"{low} ({_show(small)}) must not be more than {high} ({_show(large)})"
            )


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name not in _NOT_KEYS}
    if cls is Settings:
        known.add("targets")  # read by _targets before the sections
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(_key(where, unknown[0]), f"unknown key (known here: {', '.join(sorted(known))})")
    kwargs = {name: _convert(value, hints[name], _key(where, name)) for name, value in data.items()}
    required = [f.name for f in dataclasses.fields(cls) if f.default is f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in kwargs]
    if missing:  # e.g. a cleanup policy's table
        raise ConfigError(where, f"missing required key {missing[0]}")
    built = cls(**kwargs)
    _validate(built, where, data)
    return built


_NOT_SETTINGS = {"PGOPS_CONFIG", "PGOPS_TEST_DSN", "PGOPS_DATABASE_URL", "PGOPS_WEB_TOKEN"}
_NOT_KEYS = {"source", "configured_targets", "url_given"}  # Settings fields no file or variable sets


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """`PGOPS_POOL_REPORT_WARNING=0.8` → {"pool_report": {"warning": "0.8"}}."""
    sections = sorted((f.name for f in dataclasses.fields(Settings) if f.name not in _NOT_KEYS), key=len, reverse=True)
    overrides: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith("PGOPS_") or name in _NOT_SETTINGS:
            continue
        rest = name[len("PGOPS_") :].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section:
            overrides.setdefault(section, {})[rest[len(section) + 1 :]] = value
    return overrides


def _read_file(file: Path) -> dict[str, Any]:
    """The file's TOML; anything that is not (binary, Latin-1, huge, nested too deeply) is one line naming it."""
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)  # bounded: --config /dev/zero must not fill memory
    except FileNotFoundError:
        raise PgopsError(f"{file}: config file not found") from None
    except OSError as exc:
        raise PgopsError(f"{file}: can't read config file: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise PgopsError(f"{file}: larger than {MAX_CONFIG_BYTES // 1024**2}MB, so not a pgops.toml")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PgopsError(
            f"{file}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}): TOML files are UTF-8; "
            "save it as UTF-8 (a binary file is not a pgops.toml)"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PgopsError(f"{file}: not valid TOML: {exc}") from None
    except ValueError as exc:  # tomllib lets Python's own refusals through, e.g. an integer of 5,000 digits
        raise PgopsError(f"{file}: not valid TOML: {_shown(str(exc))}") from None
    except RecursionError:
        raise PgopsError(f"{file}: not valid TOML: arrays or tables nested too deeply") from None


def load_settings(
    path: Path | str | None = None,
    *,
    dsn: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Read the file (from `path`, `PGOPS_CONFIG`, or `./pgops.toml` when present), then the environment.

    The database URL comes from `dsn` (the `--dsn` option), `PGOPS_DATABASE_URL`, `DATABASE_URL`, and
    finally `[database] url` in the file, in that order; one given outside the file is the only target.
    """
    env = os.environ if env is None else env
    explicit = path or env.get("PGOPS_CONFIG")
    file = Path(explicit) if explicit else Path("pgops.toml")
    data: dict[str, Any] = {}
    source = "defaults"
    if explicit or file.exists():
        data = _read_file(file)
        source = str(file)
    from_env: dict[str, str] = {}
    for section, values in _env_overrides(env).items():
        if not isinstance(data.setdefault(section, {}), dict):
            raise PgopsError(f"{source}: {section}: expected a table")
        data[section].update(values)
        from_env.update({f"{section}.{key}": f"PGOPS_{section}_{key}".upper() for key in values})
    env_url = dsn or env.get("PGOPS_DATABASE_URL") or env.get("DATABASE_URL")
    if env_url:
        data.setdefault("database", {})["url"] = env_url
    try:
        targets = _targets(data.pop("targets")) if "targets" in data else ()
        settings = _build(Settings, data, "")
    except ConfigError as exc:
        origin = f"environment variable {from_env[exc.key]}" if exc.key in from_env else source
        raise PgopsError(f"{origin}: {exc.message}") from None
    if env_url and not dsn and targets:
        variable = "PGOPS_DATABASE_URL" if env.get("PGOPS_DATABASE_URL") else "DATABASE_URL"
        log.warning(
            "%s in the environment replaces the %d targets of %s: unset it to use them", variable, len(targets), source
        )
    return dataclasses.replace(settings, source=source, configured_targets=targets, url_given=bool(env_url))
