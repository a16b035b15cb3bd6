"""The one error type a user can act on, the exit codes, and the one place passwords are taken out of text.

Anything raised as `PgopsError` is printed as one line and ends the command with its exit code; any other
exception is a bug and shows a traceback only with `--debug`. Every line pgops prints or logs goes through
`redact`, so a password never reaches a terminal, a log or a JSON report, whatever shape its URL had.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from urllib.parse import parse_qs, unquote

# Exit codes follow the monitoring-plugin convention so cron and alert tooling can read them.
EXIT_OK = 0
EXIT_WARNING = 1
EXIT_CRITICAL = 2
EXIT_ERROR = 3  # pgops could not do its job (bad input, unreachable database, missing privilege)


class Level(StrEnum):
    """How a report's finding stands; a report's worst level is its command's exit code (`exit_code`)."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self]


# The one mapping between levels and exit codes (reports that rank findings by exit code read it backwards).
EXIT_CODES = {Level.OK: EXIT_OK, Level.WARNING: EXIT_WARNING, Level.CRITICAL: EXIT_CRITICAL}
LEVELS = {code: level for level, code in EXIT_CODES.items()}


def worst(levels: Iterable[Level]) -> Level:
    """The most severe of `levels`; OK when there are none."""
    return LEVELS[max((level.exit_code for level in levels), default=EXIT_OK)]


class PgopsError(Exception):
    """A failure the user can fix: the message says what and how."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(PgopsError):
    """A bad setting, for the key it names (dotted: `cleanup.batch_size`), so the loader can say whether the
    file or an environment variable gave it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


class ConnectError(PgopsError):
    """A database that could not be reached or refused the session (`db.connect`): callers that go on without
    it (the daemon, `--all`) catch this. `transient` when another attempt may succeed (the server is down or
    starting), not for a bad password or a missing privilege."""

    def __init__(self, message: str, *, transient: bool = False, reason: str = "") -> None:
        super().__init__(message)
        self.transient = transient
        self.reason = reason or message  # the server's (or libpq's) own words, for callers that say it their way


# -- passwords ---------------------------------------------------------------------------------------------------

# A URL's user information runs to its last `@`: an unencoded `/` or `@` in a password must not end it early.
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s'\"]*:)\S*@")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_secrets: set[str] = set()


def split_url(dsn: str) -> tuple[str, str | None, str] | None:
    """`scheme://`, the user information and the rest; None if not a URL.

    The user information runs to the last `@`, so that an unencoded `/` or `@` in a password stays in it, when
    what comes before reads as `user:...` (or holds no `/`): `postgresql://host/d@b` has none."""
    match = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*://)(.*)\Z", dsn.strip(), re.DOTALL)
    if not match:
        return None
    scheme, rest = match.groups()
    at = rest.rfind("@")
    if at < 0:
        return scheme, None, rest
    userinfo = rest[:at]
    if not re.match(r"[^:/@?#]*:", userinfo) and ("/" in userinfo or "?" in userinfo):
        return scheme, None, rest
    return scheme, userinfo, rest[at + 1 :]


def passwords_in(dsn: str) -> list[str]:
    """The passwords a connection string holds, as written and as libpq reads them (percent-decoded, unescaped):
    `password=` keywords, the URL's user information and its `password` query parameter."""
    found = [re.sub(r"\\(.)", r"\1", m.group(2)[1:-1]) if m.group(2).startswith("'") else m.group(2)
             for m in _KEYWORD_PASSWORD.finditer(dsn)]  # fmt: skip
    parts = split_url(dsn)
    if parts and parts[1] and ":" in parts[1]:
        found.append(parts[1].split(":", 1)[1])
    if parts:
        query = parts[2].partition("?")[2]
        found += [value for key, values in parse_qs(query).items() if key == "password" for value in values]
    return [variant for secret in found if secret for variant in {secret, unquote(secret)}]


def remember_secrets(dsn: str) -> None:
    """Have `redact` hide this connection string's passwords wherever they turn up, in any later text."""
    _secrets.update(passwords_in(dsn))


def redact(text: str) -> str:
    """Hide passwords: in URLs and keyword strings by shape, and every password pgops was handed, anywhere."""
    text = _URL_USERINFO.sub(r"\1***@", text)
    text = _KEYWORD_PASSWORD.sub(r"\1***", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if len(secret) >= 4:  # shorter ones would blank out ordinary words: the shapes above cover them
            text = text.replace(secret, "***")
    return text


def first_line(exc: BaseException) -> str:
    """An exception's first line, password-free: psycopg and libpq add hints and context below it."""
    lines = redact(str(exc)).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__
