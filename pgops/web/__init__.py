"""The daemon's read-only pages (`/`, `/connections`, `/refresh`, `/cleanup`, `/advice`, `/workload`), served on
its HTTP listener beside /metrics and /healthz. `http.py` calls `WebPages.answer` for every other path."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pgops.config import Settings
from pgops.web.auth import authorized, required_token
from pgops.web.history import HISTORY
from pgops.web.pages import SECURITY_HEADERS, PageContext, Pages, Response, dispatch

__all__ = ["Response", "WebPages", "make_pages"]


class WebPages:
    def __init__(self, pages: Pages, token: str | None) -> None:
        self.pages = pages
        self._token = token  # never logged, never in a repr

    def __repr__(self) -> str:
        return f"WebPages(token={'set' if self._token else 'none'})"

    def answer(self, path: str, authorization: str | None) -> Response:
        if not authorized(authorization, self._token):
            return Response(
                401,
                "text/plain; charset=utf-8",
                b"a token is needed: Authorization: Bearer TOKEN, or basic auth with the token as password\n",
                (*SECURITY_HEADERS, ("WWW-Authenticate", 'Basic realm="pgops", charset="UTF-8"')),
            )
        return dispatch(self.pages, path)


def make_pages(
    settings: Settings,
    dsn: str,
    host: str,
    jobs: Callable[[], Mapping[str, Any]] = dict,
    env: Mapping[str, str] | None = None,
) -> WebPages | None:
    """The pages for a daemon listening on `host`; None when `[web] enabled = false`. Refuses (PgopsError) to serve
    them beyond loopback without a token."""
    if not settings.web.enabled:
        return None
    token = required_token(settings, host, env)
    HISTORY.configure(settings)
    return WebPages(Pages(PageContext(settings, dsn, HISTORY, jobs)), token)
