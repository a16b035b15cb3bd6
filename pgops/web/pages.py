"""The daemon's read-only pages: each gathers what it shows from the jobs' own read layers (pool report, status,
refresh queue, workload report) and the daemon's memory (`history`), then renders a Jinja2 template with
autoescape on: every name and text from the database is shown as text.

Every connection a page opens is read-only at the server (`default_transaction_read_only`), so no page can change
the database whatever a read layer does.
"""

from __future__ import annotations

import importlib.resources
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
from markupsafe import Markup
from psycopg.conninfo import make_conninfo

from pgops import db
from pgops.config import Settings
from pgops.errors import EXIT_CRITICAL, EXIT_ERROR, EXIT_OK, EXIT_WARNING, first_line
from pgops.output import human_duration, human_milliseconds
from pgops.web import charts
from pgops.web.history import History

LEVELS = {EXIT_OK: "ok", EXIT_WARNING: "warning", EXIT_CRITICAL: "critical", EXIT_ERROR: "unknown"}
# worst first: a check pgops could not read is as urgent as a warning (nobody knows), a critical one more
SEVERITY = {EXIT_CRITICAL: 0, EXIT_ERROR: 1, EXIT_WARNING: 2, EXIT_OK: 3}
STATUS_LEVELS = {"ok": EXIT_OK, "warning": EXIT_WARNING, "critical": EXIT_CRITICAL}
PAGES = (
    ("/", "Overview"),
    ("/connections", "Connections"),
    ("/refresh", "Refresh"),
    ("/cleanup", "Cleanup"),
    ("/advice", "Advice"),
    ("/workload", "Workload"),
)


def read_only_dsn(dsn: str) -> str:
    """The DSN with `default_transaction_read_only=on` after the user's own options: a page only reads."""
    return make_conninfo(dsn, options=f"{db.user_options(dsn)} -c default_transaction_read_only=on".strip())


@dataclass(frozen=True)
class Check:
    area: str
    name: str
    level: int
    detail: str
    link: str

    @property
    def level_name(self) -> str:
        return LEVELS[self.level]


@dataclass
class Read:
    """What a read layer returned, or the one line saying why it could not."""

    value: Any = None
    error: str | None = None


def _read(function: Callable[[], Any]) -> Read:
    try:
        return Read(function())
    except Exception as exc:  # a page shows what failed and the rest; the daemon goes on
        return Read(error=first_line(exc))


def _ago(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "never"
    return f"{human_duration(max(now - then, timedelta(0)))} ago"


@dataclass
class PageContext:
    settings: Settings
    dsn: str
    history: History
    jobs: Callable[[], Mapping[str, Any]] = field(default=dict)  # job name -> the daemon's last RunResult


class Pages:
    def __init__(self, context: PageContext) -> None:
        self.context = context
        self.settings = context.settings
        self.dsn = read_only_dsn(context.dsn)
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("pgops.web", "templates"),
            autoescape=True,  # every template, whatever its name
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["duration"] = human_duration
        self.env.filters["level"] = lambda level: LEVELS.get(level, "unknown")
        style = importlib.resources.files("pgops.web").joinpath("style.css").read_text()
        self.env.globals.update(style=Markup(style), pages=PAGES)

    # -- reads, each through its job's own layer ----------------------------------------------------------------

    def pool(self) -> Read:
        from pgops import pool_report

        def read() -> Any:
            with pool_report.open_connection(self.dsn, self.settings) as conn:
                return pool_report.run(conn, pool_report.prepare(conn, self.settings)).report

        return _read(read)

    def status(self) -> Read:
        from pgops import status

        def read() -> Any:
            with db.connect(self.dsn, self.settings.database) as conn:
                return status.run(conn, status.prepare(conn, self.settings))

        return _read(read)

    def views(self) -> Read:
        from pgops.refresh.queue import watched_views

        def read() -> Any:
            with db.connect(self.dsn, self.settings.database) as conn:
                return watched_views(conn)

        return _read(read)

    def workload(self) -> Read:
        from pgops import workload

        def read() -> Any:
            with workload.open_connection(self.dsn, self.settings) as conn:
                return workload.run(conn, workload.prepare(conn, self.settings))

        return _read(read)

    def policies(self) -> Read:
        from pgops.cleanup.policy import resolve_policies

        return _read(lambda: resolve_policies(self.settings))

    def advice(self) -> tuple[str | None, str, datetime | None]:
        """The latest script: the one this daemon's advisor job made, else the file it writes (from before a
        restart). (script, where it comes from, when)."""
        record = self.context.history.last_advice()
        if record is not None:
            return record.script, f"the advisor job's run: {record.summary}", record.at
        path = self.settings.advisor.output
        if path is not None and path.is_file():
            at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            return path.read_text(encoding="utf-8", errors="replace"), f"{path}", at
        return None, "", None

    # -- the pages ---------------------------------------------------------------------------------------------

    def render(self, template: str, **values: Any) -> str:
        now = datetime.now(UTC)
        return self.env.get_template(template).render(now=now, ago=lambda t: _ago(now, t), **values)

    def overview(self) -> str:
        # four reads on four connections, mostly waiting on the server: side by side, the page takes the longest
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="pgops-page") as pool:
            reads = [pool.submit(read) for read in (self.status, self.pool, self.views, self.workload)]
            status, pool_report, views, workload = (future.result() for future in reads)
        checks: list[Check] = []
        if status.error:
            checks.append(Check("database", "status", EXIT_ERROR, status.error, "/"))
        else:
            for c in status.value.checks:
                checks.append(Check("database", c.name, STATUS_LEVELS.get(c.level, EXIT_ERROR), c.detail, "/"))
        checks += self._pool_checks(pool_report)
        checks += self._refresh_checks(views)
        checks += self._cleanup_checks()
        checks += self._workload_checks(workload)
        checks += self._job_checks()
        checks.sort(key=lambda c: (SEVERITY[c.level], c.area, c.name))
        worst = checks[0].level if checks else EXIT_OK
        return self.render("overview.html", title="Overview", checks=checks, worst=worst, server=status.value, path="/")

    def _pool_checks(self, pool: Read) -> list[Check]:
        if pool.error:
            return [Check("connections", "pool report", EXIT_ERROR, pool.error, "/connections")]
        report = pool.value
        limit = max(report.limits, key=lambda u: u.ratio, default=None)
        detail = f"{report.total} connections"
        if limit is not None:
            detail += f"; fullest limit: {limit.kind} {limit.name} {limit.used}/{limit.limit} ({limit.ratio:.0%})"
        checks = [Check("connections", "saturation", max((u.level for u in report.limits), default=0), detail,
                        "/connections")]  # fmt: skip
        leaks = [p for p in report.problems if p.level > EXIT_OK]
        level = max((p.level for p in leaks), default=EXIT_OK)
        kinds = sorted({p.kind for p in leaks})
        detail = f"{len(leaks)} session(s): {', '.join(kinds)}" if leaks else "no leaking session"
        checks.append(Check("connections", "leaks", level, detail, "/connections"))
        return checks

    def _refresh_checks(self, views: Read) -> list[Check]:
        from pgops.refresh.queue import is_overdue

        if views.error:
            return [Check("refresh", "watched views", EXIT_ERROR, views.error, "/refresh")]
        grace = self.settings.refresh.interval
        failed = [v.name for v in views.value if v.failure_count > 0 or v.populated is None]
        overdue = [v.name for v in views.value if is_overdue(v, grace)]
        if failed:
            return [Check("refresh", "watched views", EXIT_CRITICAL, f"failing: {', '.join(failed)}", "/refresh")]
        if overdue:
            return [Check("refresh", "watched views", EXIT_WARNING, f"overdue: {', '.join(overdue)}", "/refresh")]
        stale = sum(1 for v in views.value if v.stale_since is not None)
        detail = f"{len(views.value)} view(s), {stale} stale within their max_wait, none overdue"
        return [Check("refresh", "watched views", EXIT_OK, detail, "/refresh")]

    def _cleanup_checks(self) -> list[Check]:
        last: dict[str, Any] = {}
        for run in self.context.history.cleanup_runs():
            last[run.policy] = run
        checks = []
        for policy, run in sorted(last.items()):
            if run.error:
                checks.append(Check("cleanup", policy, EXIT_CRITICAL, f"failed: {run.error}", "/cleanup"))
            else:
                r = run.result
                level = EXIT_WARNING if r.failed_batches or r.warnings else EXIT_OK
                detail = f"{r.status}: {r.rows_deleted:,} rows deleted" + (f" ({r.reason})" if r.reason else "")
                checks.append(Check("cleanup", policy, level, detail, "/cleanup"))
        return checks

    def _workload_checks(self, report: Read) -> list[Check]:
        if report.error:
            return [Check("workload", "N+1 suspects", EXIT_ERROR, report.error, "/workload")]
        r = report.value
        detail = f"{r.suspect_count} N+1 suspect(s) among {r.statement_count:,} statements"
        return [Check("workload", "N+1 suspects", r.status, detail, "/workload")]

    def _job_checks(self) -> list[Check]:
        checks = []
        for name, result in sorted(self.context.jobs().items()):
            level = EXIT_WARNING if result.outcome == "failed" else EXIT_OK
            detail = f"last run {result.outcome} in {result.seconds:.1f}s" + (
                f": {result.detail}" if result.detail else ""
            )
            checks.append(Check("daemon", f"job {name}", level, detail, "/"))
        return checks

    def connections(self) -> str:
        pool = self.pool()
        span = self.settings.web.chart_span
        points = self.context.history.pool_points(span)
        labels: dict[str, list[tuple[datetime, float]]] = {}
        for point in points:
            for label, ratio in point.limits:
                labels.setdefault(label, []).append((point.at, ratio))
        # the server's limit first, then the fullest others at the last sample
        latest = dict(points[-1].limits) if points else {}
        order = sorted(labels, key=lambda label: (label != "server", -latest.get(label, 0.0)))
        series = [charts.Series(label, labels[label]) for label in order[:5]]
        chart = charts.line_chart(f"saturation per limit, last {human_duration(span)}", series, unit="%", y_max=1.0)
        totals = charts.line_chart(
            "connections", [charts.Series("connections", [(p.at, float(p.total)) for p in points])]
        )
        return self.render(
            "connections.html", title="Connections", pool=pool, chart=chart, totals=totals, samples=len(points),
            path="/connections",
        )  # fmt: skip

    def refresh(self) -> str:
        from pgops.refresh.queue import is_overdue, plain_is_cheaper

        views = self.views()
        grace = self.settings.refresh.interval
        rows = []
        for v in views.value or []:
            if v.populated is None:
                state, level = "missing: the view no longer exists", EXIT_CRITICAL
            elif v.failure_count > 0:
                state, level = f"failing ({v.failure_count} in a row)", EXIT_CRITICAL
            elif is_overdue(v, grace):
                state, level = "overdue", EXIT_WARNING
            elif v.stale_since is not None:
                state, level = "stale, refresh due", EXIT_OK
            else:
                state, level = "fresh", EXIT_OK
            rows.append({"view": v, "state": state, "level": level, "plain_cheaper": plain_is_cheaper(v)})
        rows.sort(key=lambda r: (SEVERITY[r["level"]], r["view"].name))
        durations = charts.bar_chart(
            "last refresh duration per view",
            [(v.name, v.last_refresh_duration.total_seconds()) for v in views.value or [] if v.last_refresh_duration],
            unit="s",
        )
        runs = self.context.history.refresh_runs()
        by_view: dict[str, list[tuple[datetime, float]]] = {}
        for run in runs:
            if run.seconds is not None:
                by_view.setdefault(run.view, []).append((run.at, run.seconds))
        over_time = charts.line_chart(
            "refresh durations (this daemon's runs)",
            [charts.Series(name, pts) for name, pts in sorted(by_view.items())[:5]],
            unit="s",
        )
        failures = [r for r in reversed(runs) if r.outcome == "failed"][:20]
        return self.render(
            "refresh.html", title="Refresh", views=views, rows=rows, durations=durations, over_time=over_time,
            failures=failures, path="/refresh",
        )  # fmt: skip

    def cleanup(self) -> str:
        runs = list(reversed(self.context.history.cleanup_runs()))
        policies = self.policies()
        last = {}
        for run in reversed(runs):
            last[run.policy] = run
        recent = list(reversed(runs[:30]))
        chart = charts.bar_chart(
            "rows deleted per run",
            [(f"{r.policy} {r.finished_at:%H:%M}", float(r.result.rows_deleted if r.result else 0)) for r in recent],
        )
        return self.render(
            "cleanup.html", title="Cleanup", runs=runs[:50], policies=policies, last=last, chart=chart,
            path="/cleanup",
        )  # fmt: skip

    def advice_page(self) -> str:
        script, source, at = self.advice()
        job = self.context.jobs().get("advisor")
        return self.render(
            "advice.html", title="Advice", script=script, source=source, at=at, job=job,
            interval=self.settings.advisor.interval, path="/advice",
        )  # fmt: skip

    def workload_page(self) -> str:
        report = self.workload()
        chart = charts.bar_chart(
            "share of statement time, top statements",
            [(f"#{c.rank}", c.share) for c in report.value.top] if report.value else [],
            unit="%",
        )
        return self.render("workload.html", title="Workload", report=report, chart=chart, path="/workload",
                           ms=human_milliseconds)  # fmt: skip

    def not_found(self, path: str) -> str:
        return self.render("not_found.html", title="Not found", missing=path, path="")


@dataclass(frozen=True)
class Response:
    code: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


HTML = "text/html; charset=utf-8"
# No script may run, nothing may load from elsewhere: the pages are HTML, inline CSS and inline SVG.
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; "
     "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)  # fmt: skip


def dispatch(pages: Pages, path: str) -> Response:
    """The page for a path; timing is the caller's."""
    started = time.perf_counter()
    routes: dict[str, Callable[[], str]] = {
        "/": pages.overview,
        "/connections": pages.connections,
        "/refresh": pages.refresh,
        "/cleanup": pages.cleanup,
        "/advice": pages.advice_page,
        "/workload": pages.workload_page,
    }
    if path == "/advice/fix.sql":
        script, _, _ = pages.advice()
        if script is None:
            return Response(404, "text/plain; charset=utf-8", b"no advice yet: the advisor job has not run\n",
                            SECURITY_HEADERS)  # fmt: skip
        return Response(
            200,
            "application/sql; charset=utf-8",
            script.encode(),
            (*SECURITY_HEADERS, ("Content-Disposition", 'attachment; filename="fix.sql"')),
        )
    route = routes.get(path.rstrip("/") or "/")
    if route is None:
        return Response(404, HTML, pages.not_found(path).encode(), SECURITY_HEADERS)
    body = route().encode()
    elapsed = time.perf_counter() - started
    return Response(200, HTML, body, (*SECURITY_HEADERS, ("Server-Timing", f"render;dur={elapsed * 1000:.1f}")))
