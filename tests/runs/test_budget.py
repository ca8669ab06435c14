"""The run budget's estimate against the kernel's own accounting of peak memory, for every mechanism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.mechanisms import registry
from service.runs import budget
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def measured() -> list[dict]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("measure_peaks.py")), str(32 << 20)],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_every_mechanism_was_measured(measured):
    assert {r["slug"] for r in measured} == set(registry.all_mechanisms())


def test_budget_is_never_below_the_measured_peak(measured):
    """The budget charges margin x the traced peak plus a fixed allowance; the measured peak of the
    forward pass (VmHWM growth) must fit in it for every mechanism, with and without attention maps."""
    s = Settings()
    slack = 16 << 20  # allocator and thread-stack noise of one measurement, far below the fixed allowance
    assert slack <= s.run_overhead_bytes
    over = [(r["slug"], r["need_weights"], r["traced"], r["measured"]) for r in measured
            if r["measured"] > s.run_budget_margin * r["traced"] + slack]
    assert not over, over
    # the sizes were large enough for the comparison to mean something
    assert sum(r["measured"] >= 16 << 20 for r in measured) >= 0.8 * len(measured)


def test_traced_peak_counts_the_attention_map():
    """Non-local attention keeps an N x N map per image: the trace must hold at least that much."""
    mech = registry.get("non-local")
    shapes = {"x": (2, 8, 32, 32)}
    params = mech.validate(shapes, {})
    est = budget.estimate(mech, shapes, params, "float32", True)
    n = 32 * 32
    assert est.activation_peak_bytes >= 2 * n * n * 4
    assert est.outputs["output"] == ([2, 8, 32, 32], "float32")
    f64 = budget.estimate(mech, shapes, params, "float64", True)
    assert f64.activation_peak_bytes >= 2 * est.activation_peak_bytes * 0.99


def test_parameter_count_matches_the_built_module():
    from service.mechanisms import runtime

    for slug in ("vision-transformer", "cbam", "perceiver", "swin-transformer"):
        mech = registry.get(slug)
        shapes, params = mech.example_shapes, mech.defaults()
        est = budget.estimate(mech, shapes, params, "float32", True)
        built = runtime.build_module(mech, shapes, params, 0)
        assert est.parameters == sum(p.numel() for p in built.parameters()), slug
