"""The daemon's memory for its pages stays bounded, and the charts draw every point and escape every label."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from pgops import metrics
from pgops.config import PoolReportSettings, Settings, WebSettings
from pgops.pool_report.analyze import LimitUsage, Report
from pgops.web import charts
from pgops.web.history import LIMITS_PER_SAMPLE, History

T0 = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)


def _report(at: datetime, roles: int) -> Report:
    limits = [LimitUsage("server", "max_connections", 50, 100, 50, 0.5, 0)]
    limits += [LimitUsage("role", f"app{n}", n, 100, 100 - n, n / 100, 0) for n in range(roles)]
    return Report(at, 0, 50, {}, limits, [], [], [], None, 0)


def test_the_pool_ring_holds_the_chart_span_and_the_fullest_limits():
    history = History()
    settings = Settings(pool_report=PoolReportSettings(interval=timedelta(seconds=15)),
                        web=WebSettings(chart_span=timedelta(hours=1), history_runs=3))  # fmt: skip
    history.configure(settings)
    for n in range(1000):
        history.record_pool(_report(T0 + timedelta(seconds=15 * n), roles=40))
    points = history.pool_points()
    assert len(points) == 241  # an hour of 15 s samples, both ends: the rest was dropped
    assert points[-1].at == T0 + timedelta(seconds=15 * 999)
    assert len(points[-1].limits) == LIMITS_PER_SAMPLE and points[-1].limits[0] == ("server", 0.5)
    assert [label for label, _ in points[-1].limits[1:]] == ["role app39", "role app38", "role app37", "role app36"]
    assert len(history.pool_points(timedelta(minutes=10))) == 41
    for n in range(10):
        history.record_cleanup(f"p{n}", None, "boom")
    assert [run.policy for run in history.cleanup_runs()] == ["p7", "p8", "p9"]


def test_only_the_shown_targets_runs_are_kept():
    """A daemon of several targets shows the first one's server: the others' runs must not land on its pages."""
    history = History()
    history.target = "main"
    for target in ("main", "other"):
        token = metrics.CURRENT_TARGET.set(target)
        try:
            history.record_cleanup(f"sessions-{target}", None, "boom")
            history.record_advice(f"advice of {target}", "-- script")
            history.record_pool(_report(T0, roles=1))
        finally:
            metrics.CURRENT_TARGET.reset(token)
    assert [run.policy for run in history.cleanup_runs()] == ["sessions-main"]
    assert history.last_advice() is not None and history.last_advice().summary == "advice of main"
    assert len(history.pool_points()) == 1


def test_a_line_chart_draws_each_point_and_escapes_labels():
    points = [(T0 + timedelta(minutes=n), n / 10) for n in range(5)]
    svg = str(charts.line_chart("<b>title</b>", [charts.Series("<script>x</script>", points)], unit="%"))
    assert svg.startswith("<svg") and 'data-points="5"' in svg and svg.count("<circle") == 5
    assert "<script>" not in svg and "&lt;script&gt;x&lt;/script&gt;" in svg and "&lt;b&gt;title" in svg
    assert "40%" in svg  # the top of the axis: the largest value


def test_a_bar_chart_draws_one_bar_each_and_empty_charts_say_so():
    svg = str(charts.bar_chart("rows", [("a", 3.0), ("<i>", 1.0)]))
    assert svg.count('class="bar"') == 2 and "&lt;i&gt;" in svg and "<i>" not in svg
    assert "nothing recorded yet" in str(charts.bar_chart("rows", []))
    assert "no samples yet" in str(charts.line_chart("x", [charts.Series("a", [])]))


def test_many_points_draw_a_line_without_a_marker_each():
    points = [(T0 + timedelta(seconds=n), 1.0) for n in range(charts.MAX_MARKERS + 1)]
    svg = str(charts.line_chart("t", [charts.Series("s", points)]))
    assert f'data-points="{charts.MAX_MARKERS + 1}"' in svg and "<circle" not in svg


def test_settings_default_to_six_hours_of_samples():
    assert dataclasses.asdict(WebSettings())["chart_span"] == timedelta(hours=6)
