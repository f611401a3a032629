"""Charts drawn on the server as inline SVG: no script, no network, readable without a browser plug-in."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f"]


@dataclass(frozen=True)
class Point:
    label: str
    parameters: int
    score: float
    group: str


def scatter(points: Sequence[Point], *, width: int = 640, height: int = 320) -> str:
    """Average score against parameter count (log scale), one colour per family, with a legend."""
    if not points:
        return '<p class="empty">No scored models to plot.</p>'
    left, right, top, bottom = 56, 150, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    low = math.floor(math.log10(min(point.parameters for point in points)))
    high = max(low + 1, math.ceil(math.log10(max(point.parameters for point in points))))
    ceiling = max(10.0, math.ceil(max(point.score for point in points) / 10) * 10)
    groups = sorted({point.group for point in points})
    colours = {group: PALETTE[index % len(PALETTE)] for index, group in enumerate(groups)}

    def x(parameters: int) -> float:
        return left + (math.log10(parameters) - low) / (high - low) * plot_w

    def y(score: float) -> float:
        return top + plot_h - score / ceiling * plot_h

    parts = [
        f'<svg class="chart" role="img" aria-label="Average score against parameters" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>',
    ]
    for power in range(low, high + 1):
        px = x(10**power)
        parts.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        parts.append(f'<text x="{px:.1f}" y="{height - 22}" text-anchor="middle" font-size="11">1e{power}</text>')
    for step in range(0, int(ceiling) + 1, max(10, int(ceiling) // 5)):
        py = y(step)
        parts.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end" font-size="11">{step}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle" font-size="12">parameters</text>'
    )
    for point in points:
        parts.append(
            f'<circle cx="{x(point.parameters):.1f}" cy="{y(point.score):.1f}" r="5" '
            f'fill="{colours[point.group]}" fill-opacity="0.8"><title>{escape(point.label)}: '
            f"{point.score:.2f}</title></circle>"
        )
    for index, group in enumerate(groups):
        ly = top + 14 + index * 18
        parts.append(f'<circle cx="{width - right + 14}" cy="{ly - 4}" r="5" fill="{colours[group]}"/>')
        parts.append(f'<text x="{width - right + 24}" y="{ly}" font-size="12">{escape(group)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars(scores: Sequence[tuple[str, float, float | None]], *, width: int = 640) -> str:
    """Normalized score per task (0-100) with ±1.96 stderr whiskers where a stderr is known."""
    if not scores:
        return '<p class="empty">No scores yet.</p>'
    label_w, row_h, plot_w = 200, 26, width - 200 - 60
    height = row_h * len(scores) + 24
    parts = [
        f'<svg class="chart" role="img" aria-label="Scores per task" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for index, (task, score, stderr) in enumerate(scores):
        top = index * row_h + 4
        length = max(0.0, min(score, 100.0)) / 100 * plot_w
        parts.append(f'<text x="{label_w - 6}" y="{top + 15}" text-anchor="end" font-size="12">{escape(task)}</text>')
        parts.append(f'<rect x="{label_w}" y="{top}" width="{length:.1f}" height="{row_h - 8}" fill="#4c78a8"/>')
        if stderr is not None:
            spread = 1.96 * stderr / 100 * plot_w
            low, high = label_w + max(0.0, length - spread), label_w + min(plot_w, length + spread)
            mid = top + (row_h - 8) / 2
            parts.append(f'<line class="whisker" x1="{low:.1f}" y1="{mid}" x2="{high:.1f}" y2="{mid}" stroke="#222"/>')
        parts.append(f'<text x="{label_w + length + 4:.1f}" y="{top + 14}" font-size="11">{score:.1f}</text>')
    parts.append(f'<text x="{label_w}" y="{height - 4}" font-size="11">0</text>')
    parts.append(f'<text x="{label_w + plot_w}" y="{height - 4}" text-anchor="end" font-size="11">100</text>')
    parts.append("</svg>")
    return "".join(parts)
