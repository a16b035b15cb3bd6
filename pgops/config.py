"""Settings from `pgops.toml` and the environment, in one place.

Every section is a frozen dataclass; the loader walks the TOML tables against the dataclass fields, so an
unknown key or a value of the wrong type is rejected with a message naming the key and the file before any
job runs. Environment variables `PGOPS_<SECTION>_<KEY>` override the file (e.g. `PGOPS_REFRESH_DEBOUNCE=10s`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pgops.errors import PgopsError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Read `250ms`, `30s`, `5m`, `1h30m`, `2d` or a plain number of seconds."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise ValueError(f"expected a duration such as 30s or 5m, got {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"a duration can't be negative: {text!r}")
        return timedelta(seconds=text)
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return timedelta(seconds=float(value))
    parts = _DURATION_PART.findall(value)
    if not parts or _DURATION_PART.sub("", value).strip():
        raise ValueError(f"expected a duration such as 30s, 5m or 1h30m, got {text!r}")
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u.lower()] for n, u in parts))


def parse_size(text: str | int) -> int:
    """Read `500MB`, `2GB`, `100kB` or a plain number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"expected a size such as 500MB or 2GB, got {text!r}")
    factor = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}[(match[2] or "b").lower()]
    return int(float(match[1]) * factor)


@dataclass(frozen=True)
class DatabaseSettings:
    url: str | None = None
    statement_timeout: timedelta = timedelta(seconds=30)
    lock_timeout: timedelta = timedelta(seconds=5)
    idle_in_transaction_session_timeout: timedelta = timedelta(seconds=60)
    connect_timeout: timedelta = timedelta(seconds=10)
    application_name: str = "pgops"


@dataclass(frozen=True)
class RefreshSettings:
    debounce: timedelta = timedelta(seconds=30)
    max_wait: timedelta = timedelta(minutes=5)
    interval: timedelta = timedelta(seconds=5)
    cron_schedule: str = "* * * * *"  # empty: schedule no pg_cron job (the daemon processes refreshes)
    cron_keep_history: timedelta = timedelta(hours=1)  # pgops' rows kept in cron.job_run_details
    statement_timeout: timedelta = timedelta(minutes=30)
    lock_timeout: timedelta = timedelta(seconds=5)


@dataclass(frozen=True)
class CleanupPolicy:
    table: str
    expired_column: str | None = None
    older_than_column: str | None = None
    older_than: timedelta | None = None
    where: str | None = None
    batch_size: int = 1000
    target_batch_duration: timedelta = timedelta(milliseconds=200)
    pause: timedelta = timedelta(0)  # batches back to back; the health throttle is what pauses them
    max_runtime: timedelta = timedelta(minutes=10)
    max_rows: int | None = None
    schedule: str = "*/5 * * * *"
    database: str | None = None  # another database on the same server; "@cron" = pg_cron's cron.database_name
    if_exists: bool = False  # skip quietly (not an error) when the table does not exist


@dataclass(frozen=True)
class CleanupSettings:
    policies: dict[str, CleanupPolicy] = field(default_factory=dict)
    max_replication_lag: timedelta = timedelta(seconds=30)
    max_lock_waiters: int = 10
    statement_timeout: timedelta = timedelta(seconds=30)
    lock_timeout: timedelta = timedelta(seconds=2)
    ready_made: list[str] = field(
        default_factory=lambda: ["idempotency_keys", "sessions", "request_logs", "cron_job_run_details"]
    )
    throttle_pause: timedelta = timedelta(seconds=5)
    throttle_on_autovacuum: bool = True


@dataclass(frozen=True)
class AdvisorSettings:
    min_calls: int = 2  # a workload that ran a few times already yields advice; one-off statements don't
    min_total_time: timedelta = timedelta(0)
    top: int = 500
    max_indexes: int = 10
    max_size: int = 10 * 1024**3
    interval: timedelta = timedelta(hours=6)
    output: Path | None = None
    statement_timeout: timedelta = timedelta(seconds=10)
    min_saving: float = 0.01  # each index (or extension of one) must save this share of the workload's time
    min_saving_per_mb: float = 0.0005  # ... and this share per MB it adds: stop growing the set below it
    write_cost_ms: float = 0.01  # time one index entry costs a write, to weigh write overhead against savings
    lock_timeout: timedelta = timedelta(seconds=5)  # the script's and --apply's SET lock_timeout
    build_timeout: timedelta = timedelta(0)  # statement_timeout for each index build; 0 = none


@dataclass(frozen=True)
class PoolReportSettings:
    warning: float = 0.75
    critical: float = 0.90
    idle_in_transaction: timedelta = timedelta(seconds=30)
    long_transaction: timedelta = timedelta(minutes=5)
    long_query: timedelta = timedelta(minutes=1)
    xmin_age: int = 1_000_000
    interval: timedelta = timedelta(seconds=15)
    top_applications: int = 10
    pgbouncer_url: str | None = None
    idle_pool_sessions: int = 20  # idle sessions of one application and client that count as pool bloat
    idle_pool_age: timedelta = timedelta(hours=1)  # ... when the oldest of them is at least this old
    idle_growth_samples: int = 3  # daemon: idle connections growing across this many samples
    server_cores: int | None = None  # for pool sizing; unset: this machine's cores when the server is local
    mask_queries: bool = True
    query_length: int = 200
    statement_timeout: timedelta = timedelta(seconds=5)


@dataclass(frozen=True)
class DaemonSettings:
    listen: str = "127.0.0.1:9188"
    pool_min_size: int = 1
    pool_max_size: int = 4
    misfire_grace_time: timedelta = timedelta(seconds=60)
    stop_timeout: timedelta = timedelta(seconds=8)  # SIGTERM → running batch finished or abandoned, then exit
    health_interval: timedelta = timedelta(seconds=10)  # health check, STATUS= and WATCHDOG=1 (or half WatchdogSec)
    jobs: list[str] = field(default_factory=lambda: ["refresh", "cleanup", "pool-sample", "advisor"])  # built-ins
    plugins: list[str] = field(default_factory=list)  # "module:function" returning extra jobs


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    refresh: RefreshSettings = field(default_factory=RefreshSettings)
    cleanup: CleanupSettings = field(default_factory=CleanupSettings)
    advisor: AdvisorSettings = field(default_factory=AdvisorSettings)
    pool_report: PoolReportSettings = field(default_factory=PoolReportSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    source: str = "defaults"  # where the settings came from, for messages

    @property
    def dsn(self) -> str:
        if not self.database.url:
            raise PgopsError(
                "no database URL: pass --dsn, set PGOPS_DATABASE_URL or DATABASE_URL, "
                "or set [database] url in pgops.toml"
            )
        return self.database.url


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
            raise PgopsError(f"{where}: expected a table, got {value!r}")
        return _build(hint, value, where)
    if origin is dict:
        _, value_type = typing.get_args(hint)
        if not isinstance(value, Mapping):
            raise PgopsError(f"{where}: expected a table, got {value!r}")
        return {k: _convert(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise PgopsError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, item_type, where) for v in value]
    try:
        if hint is timedelta:
            duration = parse_duration(value)
            if where.endswith(".interval") and duration <= timedelta(0):  # a job schedule: "every 0s" can't run
                raise ValueError(f"must be more than 0, got {value!r}")
            return duration
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got {value!r}")
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"expected a whole number, got {value!r}")
            if where.endswith("max_size") and isinstance(value, str):
                return parse_size(value)
            if not re.fullmatch(r"\s*-?\d+\s*", str(value)):
                raise ValueError(f"expected a whole number, got {value!r}")
            return int(value)
        if hint is float:
            if isinstance(value, bool) or not re.fullmatch(r"\s*-?\d+(\.\d*)?\s*", str(value)):
                raise ValueError(f"expected a number, got {value!r}")
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {value!r}")
            return value
        if hint is Path:
            return Path(str(value)).expanduser()
    except (TypeError, ValueError) as exc:
        raise PgopsError(f"{where}: {exc}") from None
    raise TypeError(f"unsupported settings type {hint!r} at {where}")  # a bug in pgops, not in the file


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(data) - known)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise PgopsError(f"{key}: unknown key (known here: {', '.join(sorted(known))})")
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}" if where else name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key (e.g. a cleanup policy's table) is missing
        missing = re.findall(r"'(\w+)'", str(exc))
        raise PgopsError(f"{where}: missing required key {missing[0] if missing else exc!s}") from None


_NOT_SETTINGS = {"PGOPS_CONFIG", "PGOPS_TEST_DSN", "PGOPS_DATABASE_URL"}


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """`PGOPS_POOL_REPORT_WARNING=0.8` → {"pool_report": {"warning": "0.8"}}."""
    sections = sorted((f.name for f in dataclasses.fields(Settings) if f.name != "source"), key=len, reverse=True)
    overrides: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith("PGOPS_") or name in _NOT_SETTINGS:
            continue
        rest = name[len("PGOPS_") :].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section:
            overrides.setdefault(section, {})[rest[len(section) + 1 :]] = value
    return overrides


def load_settings(
    path: Path | str | None = None,
    *,
    dsn: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Read the file (from `path`, `PGOPS_CONFIG`, or `./pgops.toml` when present), then the environment.

    The database URL comes from `dsn` (the `--dsn` option), `PGOPS_DATABASE_URL`, `DATABASE_URL`, and
    finally `[database] url` in the file, in that order.
    """
    env = os.environ if env is None else env
    explicit = path or env.get("PGOPS_CONFIG")
    file = Path(explicit) if explicit else Path("pgops.toml")
    data: dict[str, Any] = {}
    source = "defaults"
    if explicit or file.exists():
        try:
            data = tomllib.loads(file.read_text())
        except FileNotFoundError:
            raise PgopsError(f"{file}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise PgopsError(f"{file}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise PgopsError(f"{file}: can't read config file: {exc.strerror}") from None
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
        settings = _build(Settings, data, "")
    except PgopsError as exc:
        key = exc.message.split(":", 1)[0]
        origin = f"environment variable {from_env[key]}" if key in from_env else source
        raise PgopsError(f"{origin}: {exc.message}") from None
    return dataclasses.replace(settings, source=source)
