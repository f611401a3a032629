"""Charts drawn on the server as inline SVG: no script, no network, readable without a browser plug-in.

Both scale to their container (a viewBox and width 100%), so a phone shows the whole chart, smaller."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from corral.web.formatting import parameters as human_parameters
from corral.web.formatting import score as fmt

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f"]
# The phrase that opens each chart's element: `<svg ... width="100%"` lets CSS size it, the viewBox keeps its shape.
_SVG = 'class="chart" role="img" width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg"'


@dataclass(frozen=True)
class Point:
    label: str
    parameters: int
    score: float
    group: str


@dataclass(frozen=True)
class Bar:
    label: str  # the benchmark's display name
    score: float  # normalized, 0-100
    stderr: float | None
    tooltip: str = ""


def _decades(low: int, high: int) -> list[tuple[float, str]]:
    """Tick positions (log10) and labels: every decade, and 3x between them when the range is narrow."""
    ticks: list[tuple[float, str]] = []
    for power in range(low, high + 1):
        ticks.append((float(power), _short(10**power)))
        if high - low <= 2 and power < high:
            ticks.append((power + math.log10(3), _short(3 * 10**power)))
    return ticks


def _short(count: int) -> str:
    """10**9 -> '1B', 3 * 10**10 -> '30B': axis labels, without the decimal the tables show."""
    text = human_parameters(count).replace(" ", "")
    return text.replace(".0", "")


def _y_step(ceiling: float) -> int:
    for step in (5, 10, 20, 25):
        if ceiling / step <= 6:
            return step
    return 50


def scatter(points: Sequence[Point], *, width: int = 720, height: int = 360) -> str:
    """Average score against parameter count (log scale), one colour per family, with a legend."""
    if not points:
        return '<p class="empty">No scored models to plot.</p>'
    left, right, top, bottom = 64, 170, 16, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    low = math.floor(math.log10(min(point.parameters for point in points)))
    high = max(low + 1, math.ceil(math.log10(max(point.parameters for point in points))))
    step = _y_step(max(point.score for point in points))
    ceiling = max(step, math.ceil(max(point.score for point in points) / step) * step)
    groups = sorted({point.group for point in points})
    colours = {group: PALETTE[index % len(PALETTE)] for index, group in enumerate(groups)}

    def x(log_value: float) -> float:
        return left + (log_value - low) / (high - low) * plot_w

    def y(value: float) -> float:
        return top + plot_h - value / ceiling * plot_h

    parts = [
        f'<svg {_SVG} viewBox="0 0 {width} {height}" aria-label="Average score against parameters">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>',
    ]
    for position, label in _decades(low, high):
        px = x(position)
        parts.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        parts.append(
            f'<text class="tick x" x="{px:.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="12">'
            f"{label}</text>"
        )
    for value in range(0, int(ceiling) + 1, step):
        py = y(value)
        parts.append(f'<line x1="{left}" y1="{py:.1f}" x2="{left + plot_w}" y2="{py:.1f}" stroke="#f2f2f2"/>')
        parts.append(
            f'<text class="tick y" x="{left - 6}" y="{py + 4:.1f}" text-anchor="end" font-size="12">{value}</text>'
        )
    parts.append(
        f'<text class="axis x" x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle" font-size="13">'
        "parameters (log scale)</text>"
    )
    # Rotated, so the label runs along the axis it names.
    parts.append(
        f'<text class="axis y" transform="translate(16 {top + plot_h / 2}) rotate(-90)" text-anchor="middle" '
        'font-size="13">average score (0-100)</text>'
    )
    for point in points:
        name = f"{point.label}: {human_parameters(point.parameters)} parameters, average {fmt(point.score)}"
        parts.append(
            f'<circle cx="{x(math.log10(point.parameters)):.1f}" cy="{y(point.score):.1f}" r="6" '
            f'fill="{colours[point.group]}" fill-opacity="0.8"><title>{escape(name)}</title></circle>'
        )
    for index, group in enumerate(groups):
        ly = top + 14 + index * 20
        parts.append(f'<circle cx="{width - right + 16}" cy="{ly - 4}" r="6" fill="{colours[group]}"/>')
        parts.append(f'<text x="{width - right + 28}" y="{ly}" font-size="13">{escape(group)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars(scores: Sequence[Bar], *, width: int = 720) -> str:
    """Normalized score per task (0-100) with ±1.96 stderr whiskers where a stderr is known.

    The value is written in its own column right of the plot, so no whisker or bar ever crosses it."""
    if not scores:
        return '<p class="empty">No scores yet.</p>'
    label_w, value_w, row_h = 150, 120, 28
    plot_w = width - label_w - value_w - 8
    height = row_h * len(scores) + 28
    plot_bottom = row_h * len(scores) + 4

    def x(value: float) -> float:
        return label_w + max(0.0, min(value, 100.0)) / 100 * plot_w

    parts = [f'<svg {_SVG} viewBox="0 0 {width} {height}" aria-label="Normalized score per task">']
    for tick in (0, 25, 50, 75, 100):
        px = x(tick)
        parts.append(f'<line x1="{px:.1f}" y1="0" x2="{px:.1f}" y2="{plot_bottom}" stroke="#eee"/>')
        parts.append(
            f'<text class="tick" x="{px:.1f}" y="{height - 6}" text-anchor="middle" font-size="12">{tick}</text>'
        )
    for index, bar in enumerate(scores):
        top = index * row_h + 4
        bar_h = row_h - 10
        mid = top + bar_h / 2
        value = fmt(bar.score, 1) + (f" ± {fmt(1.96 * bar.stderr, 1)}" if bar.stderr is not None else "")
        tooltip = f"{bar.tooltip or bar.label}: {value}"
        parts.append(f"<g><title>{escape(tooltip)}</title>")
        parts.append(
            f'<text x="{label_w - 8}" y="{mid + 4:.1f}" text-anchor="end" font-size="13">{escape(bar.label)}</text>'
        )
        parts.append(
            f'<rect x="{label_w}" y="{top}" width="{x(bar.score) - label_w:.1f}" height="{bar_h}" fill="#4c78a8"/>'
        )
        if bar.stderr is not None:
            low, high = x(bar.score - 1.96 * bar.stderr), x(bar.score + 1.96 * bar.stderr)
            parts.append(
                f'<line class="whisker" x1="{low:.1f}" y1="{mid:.1f}" x2="{high:.1f}" y2="{mid:.1f}" stroke="#222"/>'
            )
            for end in (low, high):
                parts.append(
                    f'<line class="cap" x1="{end:.1f}" y1="{mid - 5:.1f}" x2="{end:.1f}" y2="{mid + 5:.1f}" '
                    'stroke="#222"/>'
                )
        parts.append(
            f'<text class="value" x="{width - 4}" y="{mid + 4:.1f}" text-anchor="end" font-size="13">{value}</text>'
        )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
