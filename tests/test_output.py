"""Every report's rich view at 80 and 160 columns: what a person acts on (a pid, an application, an age, the
problem, a policy and its status) shows whole, never cut to an ellipsis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console, RenderableType

from pgops import output
from pgops.advisor.model import Advice, Candidate, DropSuggestion, QueryCost, Recommendation, Skipped
from pgops.cleanup.result import CleanupResult, Status
from pgops.cli import cleanup as cleanup_cli
from pgops.cli import pool_report as pool_report_cli
from pgops.cli import status as status_cli
from pgops.cli import workload as workload_cli
from pgops.cli.advisor import render_tables
from pgops.config import PoolReportSettings, WorkloadSettings
from pgops.pool_report.analyze import analyze
from pgops.pool_report.sample import Backend, Sample, ServerInfo
from pgops.status import Check
from pgops.status import Status as Readiness
from pgops.workload.decide import decide
from pgops.workload.read import Snapshot, StatementStats

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
APPLICATION = "billing-worker-eu-west-1"
WIDTHS = pytest.mark.parametrize("width", [80, 160])


def rendered(renderable: RenderableType, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def assert_whole(text: str, width: int, *values: str) -> None:
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= width
    for value in values:
        assert value in text, f"{value!r} not whole in:\n{text}"


def _backend(pid: int, state: str, **more: object) -> Backend:
    fields: dict = {
        "pid": pid, "database": "accounting", "user": "billing_service", "application": APPLICATION,
        "client": "10.20.30.40", "backend_start": NOW - timedelta(hours=2), "xact_start": None, "query_start": None,
        "state_change": NOW - timedelta(seconds=5), "state": state, "wait_event_type": None, "wait_event": None,
        "xmin_age": None, "query": "UPDATE accounts SET balance = balance - 10 WHERE id = 42",
    }  # fmt: skip
    return Backend(**{**fields, **more})


@WIDTHS
def test_pool_report(width):
    since = NOW - timedelta(minutes=12, seconds=30)
    holder = _backend(123456, "idle in transaction", xact_start=since, state_change=since, query_start=since)
    waiter = _backend(123457, "active", query_start=NOW - timedelta(seconds=40), wait_event_type="Lock",
                      wait_event="transactionid", blocked_by=(123456,))  # fmt: skip
    server = ServerInfo(150004, 100, 3, 0, 0, 0, 99, "pgops", True, True, True, 2)
    report = analyze(Sample(NOW, server, [holder, waiter], {"accounting": 50}), PoolReportSettings())
    text = rendered(pool_report_cli.render(report), width)
    assert_whole(text, width, "idle in transaction", "123456", "123457", APPLICATION, "12.5m", "waiting on lock")


@WIDTHS
def test_status(width):
    checks = [
        Check("server", "ok", "PostgreSQL 15.4 on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14) 12.2.0"),
        Check(
            "pg_stat_statements",
            "warning",
            "not in shared_preload_libraries: the advisor and the workload "
            "report read nothing; add it and restart the server",
        ),
        Check("replication slot pgops_standby_slot_with_a_long_name", "critical", "inactive, retains 12 GB of WAL"),
    ]
    text = rendered(status_cli.render(Readiness("15.4", "accounting", "pgops", checks)), width)
    assert_whole(text, width, "pg_stat_statements", "warning", "replication slot pgops_standby_slot_with_a_long_name")


def test_a_name_in_a_title_is_shown_not_read_as_markup():
    """A database named `[bold]x[/bold]` (or `[link=...]`) in the status table's title stays as written."""
    checks = [Check("server", "ok", "PostgreSQL 15.4")]
    text = rendered(status_cli.render(Readiness("15.4", "[bold]acc[/bold]", "[red]me[/red]", checks)), 160)
    assert "database [bold]acc[/bold] as [red]me[/red]" in " ".join(text.split()), text  # the title wraps


@WIDTHS
def test_cleanup_summary(width, monkeypatch):
    results = [
        CleanupResult("request_logs_older_than_30_days", "public.request_logs", "app", Status.LIMIT,
                      "max_runtime 0:10:00 reached", rows_deleted=1_234_567, batches=812, seconds=600.0,
                      rows_per_second=2057.6, throttled_seconds=12.0, throttled={"replication lag": 3},
                      rows_left=42_000),
        CleanupResult("sessions", "public.sessions", "app", Status.DONE, rows_deleted=12, batches=1, seconds=0.02),
    ]  # fmt: skip
    console = Console(width=width, record=True, color_system=None)
    monkeypatch.setattr(output, "console", console)
    cleanup_cli._render(results, output.Format.table)
    text = console.export_text()
    assert_whole(text, width, "request_logs_older_than_30_days", "limit", "1,234,567", "sessions", "done")


@WIDTHS
def test_advise_summary(width):
    candidate = Candidate(table=("public", "order_line_items"), columns=("customer_id", "created_at"), include=())
    recommendation = Recommendation(
        name="pgops_order_line_items_customer_id_created_at", candidate=candidate, create_sql="", drop_sql="",
        size_bytes=48_000_000, writes=10, write_overhead_ms=1.5, ends_hot_updates=True, saved_ms=12_345.0,
        validated=True, queries=[QueryCost("SELECT 1", None, 10, 200.0, 100.0, 1.0)],
    )  # fmt: skip
    drop = DropSuggestion("public.orders_status_idx", "public.orders", "unused since statistics were reset",
                          "no scan since 2025-12-01", 8_192_000, "")  # fmt: skip
    advice = Advice(
        "accounting", NOW, ["pg_stat_statements"], {}, True, "", 120, 118, recommendations=[recommendation],
        skipped=[Skipped("VACUUM", "utility statement")], drops=[drop], duration_s=3.2,
    )  # fmt: skip
    text = rendered(render_tables(advice), width)
    assert_whole(text, width, output.human_bytes(48_000_000), "unused", output.human_bytes(8_192_000))


@WIDTHS
def test_workload(width):
    loop = StatementStats(1, "SELECT * FROM order_line_items WHERE order_id = $1", 12_000, 600.0, 12_000, 36_000, 0)
    heavy = StatementStats(2, "SELECT * FROM orders WHERE created_at > $1", 300, 600.0, 3000, 900, 10)
    report = decide(Snapshot("accounting", NOW, [loop, heavy]), WorkloadSettings())
    text = rendered(workload_cli.render(report), width)
    assert_whole(text, width, "N+1 suspect", "12,000 calls")
