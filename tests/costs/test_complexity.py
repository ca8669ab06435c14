"""The committed cost profile against the catalogue's stated complexities.

For every measured curve the growth exponent is recomputed here (least squares on log-log, numpy) over
the upper half of the points, and the stated complexity is read as an exponent along the curve's axis
(symbol weights derived from the recorded input shapes). A curve growing faster than stated beyond the
tolerance fails; one growing slower fails unless the plan records why constants dominate at these
sizes. Memory is held against the larger of the stated memory and the output's own size, which any
forward has to allocate.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from service.costs import bigo
from service.costs.plan import load_plan
from service.mechanisms import registry
from service.settings import REPO_DATA

PROFILE = REPO_DATA / "costs" / "cpu.json"
PLAN = load_plan(REPO_DATA)
DATA = json.loads(PROFILE.read_text(encoding="utf-8"))
TOL = PLAN.tolerance


def complexity(slug: str) -> dict[str, str]:
    return yaml.safe_load((REPO_DATA / "techniques" / f"{slug}.yaml").read_text(encoding="utf-8"))["complexity"]


def upper_half_slope(xs: list[float], ys: list[float]) -> float | None:
    pts = sorted((x, y) for x, y in zip(xs, ys, strict=True) if y and y > 0)
    pts = pts[len(pts) // 2:] if len(pts) >= 3 else pts
    if len(pts) < 2:
        return None
    return float(np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)[0])


def dim_weights(slug: str, curve: dict) -> dict[str, float]:
    """d log(dim) / d log(x) for each input dimension, from the recorded shapes."""
    mech = registry.get(slug)
    first, last = curve["points"][0], curve["points"][-1]
    span = math.log(last["x"] / first["x"])
    out: dict[str, float] = {}
    for spec in mech.inputs:
        if spec.name not in first["shapes"]:
            continue
        for sym, a, b in zip(spec.dims, first["shapes"][spec.name], last["shapes"][spec.name], strict=True):
            if a != b:
                out[sym] = math.log(b / a) / span
    return out


def stated_weights(slug: str, curve: dict) -> dict[str, float]:
    w = dim_weights(slug, curve)
    for symbol, dims in PLAN.techniques[slug].symbols.items():
        w[symbol] = sum(w.get(d, 0.0) for d in dims)
    return w


CASES = [(slug, c["axis"], q) for slug, t in sorted(DATA["techniques"].items()) for c in t["curves"]
         for q in ("time", "memory")]


def _curve(slug: str, axis: str) -> dict:
    return next(c for c in DATA["techniques"][slug]["curves"] if c["axis"] == axis)


def test_every_mechanism_is_measured():
    assert DATA["profile"] == PROFILE.stem
    assert set(DATA["techniques"]) == set(registry.all_mechanisms())
    for slug, t in DATA["techniques"].items():
        assert {c["axis"] for c in t["curves"]} == set(PLAN.techniques[slug].curves), slug
        for c in t["curves"]:
            assert len(c["points"]) >= 4, (slug, c["axis"], c["stopped"])


def test_profile_records_machine_and_load():
    m, cond = DATA["machine"], DATA["conditions"]
    assert m["device"] == "cpu" and m["cpu_model"] and m["torch"] and m["torch_threads"] >= 1
    assert len(cond["loadavg_before"]) == 3 and len(cond["loadavg_after"]) == 3


def test_plan_quotes_the_catalogue():
    """A plan's `stated` part must be the catalogue's own words, so a changed statement is noticed."""
    for slug, tp in PLAN.techniques.items():
        for quantity, part in tp.stated.items():
            assert part in complexity(slug)[quantity], (slug, quantity, part)
        for axis, escapes in tp.constants_dominate.items():
            assert axis in tp.curves, (slug, axis)
            assert all(len(note) > 20 for note in escapes.values()), (slug, axis)


@pytest.mark.parametrize("slug, axis, quantity", CASES, ids=[f"{s}-{a}-{q}" for s, a, q in CASES])
def test_measured_growth_agrees_with_stated_complexity(slug, axis, quantity):
    curve = _curve(slug, axis)
    tp = PLAN.techniques[slug]
    pts = curve["points"]
    xs = [p["x"] for p in pts]
    text = tp.stated.get(quantity) or complexity(slug)[quantity]
    stated = bigo.growth(text, stated_weights(slug, curve))
    if quantity == "time":
        measured = upper_half_slope(xs, [p["cpu_s"] or p["latency_s"] for p in pts])
        expected, lowest = stated.exponent, stated.lowest
    else:
        ys = [p["peak_bytes"] + 4 * p["parameters"] for p in pts]
        ys = [y if y >= PLAN.memory_floor_bytes else None for y in ys]
        # three points above the resolution at least, or the slope of two small figures is noise
        measured = upper_half_slope(xs, ys) if sum(y is not None for y in ys) >= 3 else None
        out = upper_half_slope(xs, [p["output_elements"] for p in pts]) or 0.0
        expected, lowest = max(stated.exponent, out), min(stated.lowest, out)
    recorded = curve["fits"][quantity]
    if measured is None and quantity == "memory":
        # nothing to contradict: the memory stays under the resolution up to the last planned size
        assert curve["stopped"] == "all sizes measured", (slug, axis)
        assert recorded["verdict"] == "not-measurable"
        return
    assert measured is not None, f"{slug} {axis} {quantity}: too few points above the resolution"
    assert recorded["exponent"] == pytest.approx(measured, abs=2e-3), "the profile's fit is stale"
    assert measured <= expected + TOL, (
        f"{slug} {quantity} along {axis} grows as x^{measured:.2f}, faster than the stated "
        f"x^{expected:g} ({text})")
    if measured < expected - TOL:
        escape = tp.constants_dominate.get(axis, {}).get(quantity)
        assert escape, (f"{slug} {quantity} along {axis} grows as x^{measured:.2f}, slower than the stated "
                        f"x^{expected:g} ({text}; lowest-order term x^{lowest:g}); record why in "
                        f"data/costs/plan.yaml under constants_dominate or correct the statement")
        assert recorded["verdict"] == "constants-dominate" and recorded["note"] == escape
    else:
        assert recorded["verdict"] == "matches"


def test_data_file_is_laid_out_for_diffs():
    text = PROFILE.read_text(encoding="utf-8")
    assert text.endswith("\n")
    # one point per line: no line holds two points, and the file is not one long line
    assert max(len(line) for line in text.splitlines()) < 400
    assert text.count('"x": ') >= sum(len(c["points"]) for t in DATA["techniques"].values() for c in t["curves"])


def test_profile_names_its_file():
    assert Path(PROFILE).stem == DATA["profile"]
