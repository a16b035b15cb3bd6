"""Who may read the pages: anyone on this machine when the daemon listens on loopback; beyond it, only a request
that carries the token (`Authorization: Bearer TOKEN`, or basic auth with the token as password, any user name).

The token comes from the environment (`PGOPS_WEB_TOKEN`) or from `[web] token_file`; it is never logged nor
shown, and an error about it names where it comes from, never what it is.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
from collections.abc import Mapping

from pgops.config import Settings
from pgops.errors import PgopsError

TOKEN_VARIABLE = "PGOPS_WEB_TOKEN"
# A token file is a line of text: reading a large file by mistake (a key store, /dev/zero) must not fill memory.
MAX_TOKEN_BYTES = 4096


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(settings: Settings, env: Mapping[str, str] | None = None) -> str | None:
    """The token from PGOPS_WEB_TOKEN, else from the token file; None when neither is set."""
    env = os.environ if env is None else env
    given = env.get(TOKEN_VARIABLE)
    if given is not None:
        if not given.strip():
            raise PgopsError(f"{TOKEN_VARIABLE} is set but empty: set it to a long random token, or unset it")
        return given.strip()
    path = settings.web.token_file
    if path is None:
        return None
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise PgopsError(f"web.token_file: can't read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise PgopsError(f"web.token_file: {path} is larger than {MAX_TOKEN_BYTES} bytes: it should hold the token")
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise PgopsError(f"web.token_file: {path} is not UTF-8 text") from None
    if not token:
        raise PgopsError(f"web.token_file: {path} is empty")
    return token


def required_token(settings: Settings, host: str, env: Mapping[str, str] | None = None) -> str | None:
    """The token requests must carry (None: none needed, on loopback without one configured). Listening beyond
    loopback without a token is refused: the pages show query text, client addresses and user names."""
    token = load_token(settings, env)
    if token is None and not is_loopback(host):
        raise PgopsError(
            f"the daemon's pages would listen on {host}, beyond this machine, without a token: set "
            f"{TOKEN_VARIABLE} or [web] token_file, listen on 127.0.0.1, or set [web] enabled = false"
        )
    return token


def authorized(header: str | None, token: str | None) -> bool:
    """Whether the request's Authorization header carries the token (always, when no token is needed)."""
    if token is None:
        return True
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        given = value
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        given = decoded.partition(":")[2]
    else:
        return False
    return hmac.compare_digest(given.encode(), token.encode())
