"""Connections with pgops' session settings, one-line connection errors, and retry of transient failures.

Every statement pgops runs on a user's database runs under `statement_timeout` and `lock_timeout`, with
`application_name = 'pgops'`, so a stuck pgops never holds a lock the application waits on.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import TypeVar
from urllib.parse import unquote

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from pgops.config import DatabaseSettings
from pgops.errors import ConnectError, PgopsError, first_line, redact, remember_secrets, split_url

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATEs worth another try: the server went away or restarts, or a concurrent transaction got in the way.
TRANSIENT_SQLSTATES = {
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up, shutting down, in recovery)
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout)
}


def _ms(value: timedelta) -> int:
    return int(value.total_seconds() * 1000)


def check_url(dsn: str) -> None:
    """Refuse a URL whose user information libpq would split at the wrong place, and remember its password.

    libpq ends the user information at the first `/` or `@`: with either unencoded in the password, the rest
    of the password becomes the host, port and database, and every message would show it."""
    remember_secrets(dsn)
    parts = split_url(dsn)
    if parts is None or parts[1] is None:
        return
    scheme, userinfo, rest = parts
    if "/" in userinfo or "@" in userinfo:
        user = userinfo.split(":", 1)[0]
        shown = f"{scheme}{user}{':***' if ':' in userinfo else ''}@{rest}"
        raise PgopsError(
            f"invalid database URL {shown!r}: its user or password holds an unencoded '/' or '@'; "
            "percent-encode them (/ as %2F, @ as %40)"
        )


def describe(dsn: str) -> str:
    """`host:port/dbname as user`, never the password, for messages."""
    parts = split_url(dsn)
    user = None
    if parts is not None:  # parse the URL without its user information, whatever that holds
        scheme, userinfo, rest = parts
        user = unquote(userinfo.split(":", 1)[0]) if userinfo else None
        dsn = scheme + rest
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return redact(dsn)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    user = user or params.get("user")
    dbname = params.get("dbname") or user or "(default)"
    return redact(f"{host}:{port}/{dbname}" + (f" as {user}" if user else ""))


def _server_reason(exc: Exception) -> str:
    """The server's (or libpq's) own reason, without psycopg's wrapping and hints."""
    reason = first_line(exc).rsplit(" failed: ", 1)[-1]
    return re.sub(r"^(FATAL|ERROR):\s+", "", reason).strip()


class _FromSettings(Enum):
    FROM_SETTINGS = "from settings"


FROM_SETTINGS = _FromSettings.FROM_SETTINGS
Limit = timedelta | None | _FromSettings
"""A session limit: a value, None to leave it to the server, or FROM_SETTINGS for `[database]`'s."""

# A server that vanished without closing the socket (a network partition, a frozen host) must fail a long-lived
# session's next statement in seconds, not block it until the kernel gives up on the connection after minutes.
KEEPALIVES: dict[str, object] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


@dataclass(frozen=True)
class ConnectOptions:
    """How one connection differs from pgops' default session (autocommit, `[database]`'s limits)."""

    statement_timeout: Limit = FROM_SETTINGS
    lock_timeout: Limit = FROM_SETTINGS
    idle_in_transaction_session_timeout: Limit = FROM_SETTINGS
    autocommit: bool = True
    read_only: bool = False  # default_transaction_read_only: a session that must never write
    keepalives: bool = False  # long-lived sessions (the daemon's): notice a vanished server in seconds
    # PgBouncer's admin console: no `options` (it refuses startup parameters it does not know), and the simple
    # query protocol (its SHOW commands take no extended protocol)
    pgbouncer_console: bool = False
    application_name: str | None = None  # None: `[database] application_name`
    target_session_attrs: str | None = None  # None: the URL's own


DEFAULT = ConnectOptions()
PGBOUNCER_CONSOLE = ConnectOptions(pgbouncer_console=True)


def session_options(settings: DatabaseSettings, user_options: str = "", options: ConnectOptions = DEFAULT) -> str:
    """The `options` string that sets pgops' session limits at connection time (no extra round trip).

    The user's own options (the URL's `options`, else `PGOPTIONS`) come first and are kept, a `search_path`
    say; pgops' limits follow, and the later setting wins. A limit of None leaves that setting to the server.
    `standard_conforming_strings` is on because a cleanup `where` is read by a lexer that assumes it."""
    values = {
        "statement_timeout": (options.statement_timeout, settings.statement_timeout),
        "lock_timeout": (options.lock_timeout, settings.lock_timeout),
        "idle_in_transaction_session_timeout": (
            options.idle_in_transaction_session_timeout,
            settings.idle_in_transaction_session_timeout,
        ),
    }
    chosen = {name: default if given is FROM_SETTINGS else given for name, (given, default) in values.items()}
    ours = [f"-c {name}={_ms(value)}" for name, value in chosen.items() if isinstance(value, timedelta)]
    if options.read_only:
        ours.append("-c default_transaction_read_only=on")
    return " ".join([user_options.strip(), *ours, "-c standard_conforming_strings=on"]).strip()


def user_options(dsn: str) -> str:
    """The options the user gave: the connection string's `options`, else the `PGOPTIONS` environment variable."""
    try:
        given = conninfo_to_dict(dsn).get("options")
    except psycopg.ProgrammingError:
        given = None
    return str(given if given is not None else os.environ.get("PGOPTIONS", ""))


def connection_kwargs(
    settings: DatabaseSettings, dsn: str = "", options: ConnectOptions = DEFAULT
) -> dict[str, object]:
    """The keyword arguments of `psycopg.connect` (and of the pool's connections) for `options`."""
    kwargs: dict[str, object] = {
        "autocommit": options.autocommit or options.pgbouncer_console,
        "connect_timeout": max(1, int(settings.connect_timeout.total_seconds())),
    }
    if options.pgbouncer_console:
        # libpq would still send PGOPTIONS: an empty `options` keeps it off the console's startup packet
        kwargs.update(options="", cursor_factory=psycopg.ClientCursor)
    else:
        kwargs.update(
            application_name=options.application_name or settings.application_name,
            options=session_options(settings, user_options(dsn), options),
        )
    if options.keepalives:
        kwargs.update(KEEPALIVES)
    if options.target_session_attrs:
        kwargs["target_session_attrs"] = options.target_session_attrs
    return kwargs


def connect(
    dsn: str, settings: DatabaseSettings | None = None, options: ConnectOptions = DEFAULT
) -> psycopg.Connection:
    """Open a connection with pgops' session settings; a failure is one line, a `ConnectError`.

    `options` change this connection's session, e.g. `ConnectOptions(statement_timeout=timedelta(minutes=30))`
    for a refresh.
    """
    settings = settings or DatabaseSettings()
    check_url(dsn)
    try:
        return psycopg.connect(dsn, **connection_kwargs(settings, dsn, options))
    except psycopg.Error as exc:
        raise connect_error(dsn, exc) from None


def connect_error(dsn: str, exc: psycopg.Error) -> PgopsError:
    """The one translation of a failed connection attempt: one line naming host and database, never a password."""
    if isinstance(exc, psycopg.ProgrammingError):  # malformed DSN: libpq rejected it before connecting
        return PgopsError(f"invalid database URL {redact(dsn)!r}: {_server_reason(exc)}")
    reason = _server_reason(exc)
    # libpq gives no SQLSTATE for a refused session; the server's DETAIL names what is missing (a privilege)
    detail = [line.removeprefix("DETAIL:").strip() for line in str(exc).splitlines() if line.startswith("DETAIL:")]
    if detail:
        reason += f" ({redact(detail[0])})"
    return ConnectError(f"can't connect to {describe(dsn)}: {reason}", transient=is_transient(exc), reason=reason)


def connect_like(conn: psycopg.Connection, dbname: str) -> psycopg.Connection:
    """A connection to another database of `conn`'s server, as the same role with the same session settings."""
    params: dict[str, object] = {"dbname": dbname}
    if conn.info.password:
        params["password"] = conn.info.password
    dsn = make_conninfo(conn.info.dsn, **params)
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        raise connect_error(dsn, exc) from None


def make_pool(
    dsn: str,
    settings: DatabaseSettings | None = None,
    *,
    min_size: int = 1,
    max_size: int = 4,
    name: str = "pgops",
) -> ConnectionPool:
    """A pool whose connections all carry pgops' session settings; opened by the caller."""
    settings = settings or DatabaseSettings()
    check_url(dsn)
    return ConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        name=name,
        kwargs=connection_kwargs(settings, dsn),
        open=False,
        # Give up reconnecting after 30 s: unbounded, the pool's backoff keeps growing through a long outage and
        # jobs would wait minutes for its next attempt; the next request starts a fresh attempt instead, so jobs
        # get connections within seconds of the server's return.
        reconnect_timeout=30.0,
        check=ConnectionPool.check_connection,
    )


def is_transient(exc: BaseException) -> bool:
    """True for failures that another attempt may not see: lost connections, restarts, lock conflicts."""
    if isinstance(exc, ConnectError):
        return exc.transient
    if isinstance(exc, pgerrors.Error) and exc.sqlstate:
        return exc.sqlstate in TRANSIENT_SQLSTATES or exc.sqlstate.startswith("08")
    # No SQLSTATE: the connection broke (server gone, network), or the pool had none to give.
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | PoolTimeout)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits up to min(max_delay, base_delay * 2**(n-1))."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0


def retry(
    fn: Callable[[], T],
    *,
    backoff: Backoff = Backoff(),
    what: str = "operation",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn`, retrying transient failures with exponential backoff and full jitter."""
    attempts = backoff.attempts
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = random.uniform(0, min(backoff.max_delay, backoff.base_delay * 2 ** (attempt - 1)))
            log.warning(
                "%s failed (%s), retry %d/%d in %.1fs",
                what,
                _server_reason(exc),
                attempt,
                attempts - 1,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")
