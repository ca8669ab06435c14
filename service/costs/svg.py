"""Cost curves as inline SVG: log-log charts drawn on the server, readable without JavaScript.

Every chart has a ``<title>`` and a ``<desc>`` (named by ``aria-labelledby``), each series a text
legend with its fitted exponent, and each point a ``<title>`` with its figures. Colours and dash
patterns come from classes in atlas.css (``series-0`` ... ``series-5``), never from inline styles, so a
strict Content-Security-Policy applies; series differ by dash pattern and marker too, not by colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 44
MARKERS = ("circle", "square", "triangle", "diamond", "circle", "square")
AXIS_NAMES = {"positions": "positions (H × W or N)", "channels": "channels (C or D)", "batch": "batch size (B)"}


@dataclass
class Series:
    label: str
    xs: list[float]
    ys: list[float]
    exponent: float | None = None
    stated: float | None = None


@dataclass
class Quantity:
    key: str
    title: str
    unit: str
    scale: float  # value in the unit = raw * scale


LATENCY = Quantity("time", "Forward time", "ms", 1e3)
MEMORY = Quantity("memory", "Memory (weights + forward peak)", "MiB", 1 / (1 << 20))


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if v >= 1000 or v < 0.01:
        exp = math.floor(math.log10(v))
        mant = v / 10 ** exp
        return f"{mant:.3g}e{exp}" if abs(mant - 1) > 1e-9 else f"1e{exp}"
    return f"{v:.3g}"


def _ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten in [lo, hi]; with fewer than three, the 2 and 5 multiples too."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = [10.0 ** e for e in range(a, b + 1)]
    ticks = [t for t in decades if lo <= t * (1 + 1e-9) and t <= hi * (1 + 1e-9)]
    if len(ticks) < 3:
        ticks = sorted({t * m for t in decades for m in (1, 2, 5) if lo <= t * m * (1 + 1e-9) <= hi * (1 + 2e-9)})
    return ticks


def _marker(kind: str, x: float, y: float, cls: str, tip: str) -> str:
    t = f"<title>{escape(tip)}</title>"
    if kind == "square":
        return f'<rect class="{cls}" x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7">{t}</rect>'
    if kind == "triangle":
        pts = f"{x:.1f},{y - 4.5:.1f} {x - 4.5:.1f},{y + 3.5:.1f} {x + 4.5:.1f},{y + 3.5:.1f}"
        return f'<polygon class="{cls}" points="{pts}">{t}</polygon>'
    if kind == "diamond":
        pts = f"{x:.1f},{y - 5:.1f} {x - 5:.1f},{y:.1f} {x:.1f},{y + 5:.1f} {x + 5:.1f},{y:.1f}"
        return f'<polygon class="{cls}" points="{pts}">{t}</polygon>'
    return f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="3.5">{t}</circle>'


def chart(series: Sequence[Series], quantity: Quantity, axis: str, chart_id: str, profile: str) -> Markup:
    """One log-log chart of ``quantity`` against the axis size for up to six series."""
    pts = [(x, y) for s in series for x, y in zip(s.xs, s.ys, strict=True) if x > 0 and y > 0]
    axis_name = AXIS_NAMES.get(axis, axis)
    title = f"{quantity.title} against {axis_name}, log-log ({profile})"
    parts = [f'<svg class="cost-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="{chart_id}-title">{escape(title)}</title>']
    desc = []
    for s in series:
        if not s.xs:
            desc.append(f"{s.label}: no measurement.")
            continue
        slope = f"grows as x^{s.exponent:.2f}" if s.exponent is not None else "no fitted exponent"
        stated = f" (stated x^{s.stated:g})" if s.stated is not None else ""
        desc.append(f"{s.label}: {len(s.xs)} points from x={_fmt(s.xs[0])} ({_fmt(s.ys[0] * quantity.scale)} "
                    f"{quantity.unit}) to x={_fmt(s.xs[-1])} ({_fmt(s.ys[-1] * quantity.scale)} {quantity.unit}); "
                    f"{slope}{stated}.")
    parts.append(f'<desc id="{chart_id}-desc">{escape(" ".join(desc) or "No measurements.")}</desc>')
    if not pts:
        parts.append(f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text></svg>')
        return Markup("".join(parts))
    xlo, xhi = min(p[0] for p in pts), max(p[0] for p in pts)
    ylo, yhi = min(p[1] for p in pts) * quantity.scale, max(p[1] for p in pts) * quantity.scale
    if xhi / xlo < 10:
        xlo, xhi = xlo / 2, xhi * 2
    if yhi / ylo < 10:
        ylo, yhi = ylo / 2, yhi * 2
    lx0, lx1, ly0, ly1 = math.log(xlo), math.log(xhi), math.log(ylo), math.log(yhi)
    padx, pady = 0.04 * (lx1 - lx0), 0.06 * (ly1 - ly0)  # keep markers off the frame
    lx0, lx1, ly0, ly1 = lx0 - padx, lx1 + padx, ly0 - pady, ly1 + pady
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (math.log(x) - lx0) / (lx1 - lx0) * pw

    def py(y: float) -> float:
        return TOP + ph - (math.log(y) - ly0) / (ly1 - ly0) * ph

    parts.append('<g class="grid" aria-hidden="true">')
    for t in _ticks(xlo, xhi):
        parts.append(f'<line x1="{px(t):.1f}" y1="{TOP}" x2="{px(t):.1f}" y2="{TOP + ph}"/>'
                     f'<text class="tick" x="{px(t):.1f}" y="{TOP + ph + 14}" text-anchor="middle">{_fmt(t)}</text>')
    for t in _ticks(ylo, yhi):
        parts.append(f'<line x1="{LEFT}" y1="{py(t):.1f}" x2="{LEFT + pw}" y2="{py(t):.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    parts.append(f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/>')
    parts.append(f'<text class="axis-label" x="{LEFT + pw / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
                 f'{escape(axis_name)}</text>')
    parts.append(f'<text class="axis-label" transform="rotate(-90)" x="{-(TOP + ph / 2)}" y="14" '
                 f'text-anchor="middle">{escape(quantity.title)} ({quantity.unit})</text></g>')
    for i, s in enumerate(series):
        cls = f"series series-{i % 6}"
        coords = [(px(x), py(y * quantity.scale), x, y) for x, y in zip(s.xs, s.ys, strict=True) if x > 0 and y > 0]
        if not coords:
            continue
        parts.append(f'<g class="{cls}"><title>{escape(s.label)}</title>')
        if len(coords) > 1:
            path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy, _, _ in coords)
            parts.append(f'<polyline class="line" points="{path}"/>')
        for cx, cy, x, y in coords:
            tip = f"{s.label}: x={_fmt(x)}, {_fmt(y * quantity.scale)} {quantity.unit}"
            parts.append(_marker(MARKERS[i % 6], cx, cy, "marker", tip))
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))
