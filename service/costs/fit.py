"""Empirical growth exponents and how they compare with a stated complexity.

The exponent of a curve is the least-squares slope of log(y) on log(x) over the upper half of its
points (by x): small sizes are dominated by fixed per-call costs, so the lower half says little about
growth. A stated complexity gives an expected exponent (its largest monomial degree, ``bigo``); the
measurement agrees when it is within ``tolerance`` of it. A curve that grows faster than stated
contradicts the statement. One that grows slower does too, unless the data records why constants (or
lower-order terms) dominate at the measured sizes; then the verdict says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

MATCHES = "matches"
CONSTANTS = "constants-dominate"
FASTER = "grows-faster-than-stated"
SLOWER = "grows-slower-than-stated"
UNRESOLVED = "not-measurable"


def upper_half(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
    pts = sorted((x, y) for x, y in zip(xs, ys, strict=True) if x > 0 and y is not None and y > 0)
    return pts[len(pts) // 2:] if len(pts) >= 3 else pts


def slope(pts: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of log y on log x; None with fewer than two distinct x."""
    if len({x for x, _ in pts}) < 2:
        return None
    lx = [math.log(x) for x, _ in pts]
    ly = [math.log(y) for _, y in pts]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sxx


def exponent(xs: Sequence[float], ys: Sequence[float | None], min_points: int = 2) -> tuple[float | None, int]:
    """Slope over the upper half of the points with a value; None when fewer than ``min_points`` have one."""
    if sum(1 for y in ys if y is not None and y > 0) < min_points:
        return None, 0
    pts = upper_half(xs, ys)  # type: ignore[arg-type]
    return slope(pts), len(pts)


@dataclass
class Judgement:
    exponent: float | None
    points: int
    stated: str
    stated_exponent: float
    lowest_term: float
    verdict: str
    note: str | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("exponent", "stated_exponent", "lowest_term"):
            if d[k] is not None:
                d[k] = round(d[k], 3)
        return d


def judge(measured: float | None, points: int, stated: str, expected: float, lowest: float,
          tolerance: float, escape: str | None) -> Judgement:
    if measured is None:
        return Judgement(None, points, stated, expected, lowest, UNRESOLVED,
                         "too few points above the measurement's resolution")
    if abs(measured - expected) <= tolerance:
        return Judgement(measured, points, stated, expected, lowest, MATCHES)
    if measured > expected + tolerance:
        return Judgement(measured, points, stated, expected, lowest, FASTER)
    if escape:
        return Judgement(measured, points, stated, expected, lowest, CONSTANTS, escape)
    return Judgement(measured, points, stated, expected, lowest, SLOWER)
