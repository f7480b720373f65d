"""Inline SVG line charts, written by hand so the report needs no plotting library or CDN.

In: named series of (x, y) points (training curves). Out: an `<svg>` element as a string.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
MARKERS_UP_TO = 12  # series with at most this many points also get a dot per point


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if 1000 <= abs(v) < 1e6:
        return f"{v:.0f}"
    if abs(v) >= 1e6 or abs(v) < 0.01:
        return f"{v:.2g}"
    return f"{v:.3g}"


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / count))
    for mult in (1, 2, 5, 10):
        if (hi - lo) / (step * mult) <= count:
            step *= mult
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str,
               x_label: str = "step", y_label: str = "", width: int = 420,
               height: int = 240) -> str:
    """An SVG chart with one polyline per series, axes with round ticks, and a legend."""
    points = {name: [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)
                     if math.isfinite(float(y))] for name, (xs, ys) in series.items()}
    points = {k: v for k, v in points.items() if v}
    left, right, top, bottom = 52, 12, 28, 36
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">'
           f'{escape(title)}</text>']
    if not points:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                   f'font-size="12">no data</text></svg>')
        return "".join(out)
    xs = [p[0] for v in points.values() for p in v]
    ys = [p[1] for v in points.values() for p in v]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - abs(y0) * 0.1 - 1e-9, y1 + abs(y1) * 0.1 + 1e-9
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" '
               f'stroke="#999"/>')
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                   f'stroke="#eee"/><text x="{left - 4}" y="{sy(t) + 4:.1f}" '
                   f'text-anchor="end" font-size="10">{_fmt(t)}</text>')
    for t in _ticks(x0, x1):
        out.append(f'<text x="{sx(t):.1f}" y="{top + ph + 14}" text-anchor="middle" '
                   f'font-size="10">{_fmt(t)}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" '
               f'font-size="11">{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text x="12" y="{top + ph / 2}" text-anchor="middle" font-size="11" '
                   f'transform="rotate(-90 12 {top + ph / 2})">{escape(y_label)}</text>')
    for k, (name, pts) in enumerate(points.items()):
        colour = PALETTE[k % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                   f'points="{path}"><title>{escape(name)}</title></polyline>')
        if len(pts) <= MARKERS_UP_TO:  # sparse series (validation every N steps): show points
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>'
                    for x, y in pts]
        out.append(f'<text x="{left + pw - 4}" y="{top + 14 + 13 * k}" text-anchor="end" '
                   f'font-size="11" fill="{colour}">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)
