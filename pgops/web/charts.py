"""Charts as inline SVG, drawn here in Python: no JavaScript, nothing fetched, so a page works on a server
without internet. Every label goes through `escape` (names come from the database)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 40
# colour-blind safe (Okabe-Ito)
COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")
# text sizes on the SVG itself: a chart reads the same outside the page's stylesheet
TICK, LEGEND = '<text class="tick" font-size="11"', '<text class="legend" font-size="11"'
# Markers beyond this many points would only blacken the line.
MAX_MARKERS = 120


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[datetime, float]]


def _fmt(value: float, unit: str) -> str:
    """An axis or point label: three significant figures; seconds under one as milliseconds."""
    if unit == "%":
        return f"{value * 100:.0f}%"
    if unit == "s" and 0 < value < 1:
        return f"{value * 1000:.3g}ms"
    if value >= 1000:
        return f"{value:,.0f}{unit}"
    return f"{value:.3g}{unit}"


def _empty(title: str, message: str) -> Markup:
    return Markup(
        f'<svg class="chart empty" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} 60" '
        f'width="{WIDTH}" height="60"><text x="10" y="35">{escape(message)}</text></svg>'
    )


def _axes(title: str, y_max: float, unit: str) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):
        value = y_max * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'{TICK} x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(value, unit)}</text>')
    return parts


def line_chart(title: str, series: list[Series], *, unit: str = "", y_max: float | None = None) -> Markup:
    """Lines over time, one per series; `unit` "%" reads values as ratios (0 to 1)."""
    series = [s for s in series if s.points]
    if not series:
        return _empty(title, "no samples yet: the daemon draws this from its own samples as it takes them")
    times = [t for s in series for t, _ in s.points]
    start, end = min(times), max(times)
    span = max((end - start).total_seconds(), 1.0)
    top = max(y_max or 0.0, max(v for s in series for _, v in s.points), 1e-9)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(t: datetime, v: float) -> tuple[float, float]:
        return LEFT + plot_w * (t - start).total_seconds() / span, TOP + plot_h - plot_h * min(v, top) / top

    parts = _axes(title, top, unit)
    parts.append(f'{TICK} x="{LEFT}" y="{HEIGHT - BOTTOM + 14}">{start:%H:%M}</text>')
    parts.append(f'{TICK} x="{WIDTH - RIGHT}" y="{HEIGHT - BOTTOM + 14}" text-anchor="end">{end:%H:%M} UTC</text>')
    for index, s in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        coords = [xy(t, v) for t, v in s.points]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(
            f'<polyline class="series" data-points="{len(coords)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" points="{path}"><title>{escape(s.label)}</title></polyline>'
        )
        if len(coords) <= MAX_MARKERS:
            for (x, y), (t, v) in zip(coords, s.points, strict=True):
                parts.append(
                    f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}">'
                    f"<title>{escape(s.label)} {t:%H:%M:%S}: {_fmt(v, unit)}</title></circle>"
                )
        # one row of legends under the plot, each label cut to its share of the width
        room = min(220.0, (WIDTH - LEFT - RIGHT) / len(series))
        lx, ly = LEFT + index * room, HEIGHT - 14
        fits = max(4, int((room - 18) / 6.5))
        label = s.label if len(s.label) <= fits else s.label[: fits - 1] + "…"
        parts.append(f'<rect x="{lx:.1f}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'{LEGEND} x="{lx + 14:.1f}" y="{ly + 1}">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(title: str, bars: list[tuple[str, float]], *, unit: str = "") -> Markup:
    """One bar per (label, value), left to right."""
    if not bars:
        return _empty(title, "nothing recorded yet")
    top = max(max(v for _, v in bars), 1e-9)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / len(bars)
    parts = _axes(title, top, unit)
    for index, (label, value) in enumerate(bars):
        h = plot_h * value / top
        x = LEFT + index * step + step * 0.15
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
            f'fill="{COLOURS[0]}"><title>{escape(label)}: {_fmt(value, unit)}</title></rect>'
        )
        if len(bars) <= 12:
            fits = max(6, int(step / 7))  # characters of 11px text under a bar
            shown = label if len(label) <= fits else label[: fits - 1] + "…"
            parts.append(
                f'{TICK} x="{x + step * 0.35:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">'
                f"{escape(shown)}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))
