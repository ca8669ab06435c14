"""A short real sweep: every figure of a point is checked against an independent count."""

import pytest
import torch

from service.costs import profile
from service.costs.plan import Plan, expand, symbol_weights
from service.costs.sweep import Ceilings, run_sweep
from service.mechanisms import registry

PLAN = Plan.model_validate({
    "tolerance": 0.35, "memory_floor_bytes": 1 << 20,
    "techniques": {
        "squeeze-and-excitation": {"fixed": {"B": 1, "C": 64}, "curves": {
            "positions": {"dims": ["H", "W"], "sizes": [4, 8, 16, 32]}}},
        "non-local": {"fixed": {"B": 1, "C": 16}, "symbols": {"N": ["H", "W"]}, "curves": {
            "positions": {"dims": ["H", "W"], "sizes": [4, 8, 12, 16, 24, 32, 48]}}},
    }})
COMPLEXITY = {"squeeze-and-excitation": {"time": "O(HWC + C^2/r)", "memory": "O(C^2/r)"},
              "non-local": {"time": "O(N^2 C'')", "memory": "O(N^2)"}}


@pytest.fixture(scope="module")
def result():
    torch.set_num_threads(1)
    return run_sweep(PLAN, COMPLEXITY, profile="test-cpu", device=torch.device("cpu"),
                     ceilings=Ceilings(latency_s=0.5, peak_bytes=256 << 20, curve_s=20), log=lambda _s: None)


def test_profile_is_valid_and_names_the_machine(result):
    text = profile.dumps(result)  # validates
    assert '"profile": "test-cpu"' in text
    m = result["machine"]
    assert m["device"] == "cpu" and m["torch"] == torch.__version__ and m["torch_threads"] == 1
    assert m["gpu"] is None
    assert len(result["conditions"]["loadavg_before"]) == 3


def test_points_follow_the_plan(result):
    (curve,) = result["techniques"]["squeeze-and-excitation"]["curves"]
    assert curve["axis"] == "positions"
    assert [p["x"] for p in curve["points"]] == [16, 64, 256, 1024]
    assert curve["points"][-1]["shapes"] == {"x": [1, 64, 32, 32]}
    assert curve["weights"] == {"H": 0.5, "W": 0.5}


def test_parameters_and_flops_match_a_hand_count(result):
    # SE with C=64, r=16: fc1 64->4 and fc2 4->64 with biases; FLOPs of the two products on one vector
    c, h = 64, 4
    for p in result["techniques"]["squeeze-and-excitation"]["curves"][0]["points"]:
        assert p["parameters"] == c * h + h + h * c + c
        assert p["flops"] == 2 * c * h + 2 * h * c
        assert p["output_elements"] == c * p["x"]


def test_non_local_grows_quadratically_in_memory(result):
    (curve,) = result["techniques"]["non-local"]["curves"]
    # the N x N affinity dominates: the upper half of the curve grows as N^2 in memory and in FLOPs
    assert curve["fits"]["memory"]["stated_exponent"] == 2.0
    assert curve["fits"]["flops"]["exponent"] == pytest.approx(2.0, abs=0.25)
    assert curve["fits"]["memory"]["exponent"] == pytest.approx(2.0, abs=0.35)
    n = curve["points"][-1]["x"]
    assert curve["points"][-1]["peak_bytes"] >= 4 * n * n  # at least the float32 affinity matrix


def test_ceiling_stops_a_curve_before_it_is_passed():
    torch.set_num_threads(1)
    tight = Ceilings(latency_s=10, peak_bytes=4 << 20, curve_s=20)  # 4 MiB: the 32x32 map's affinity is 4 MiB
    res = run_sweep(PLAN, COMPLEXITY, profile="test-cpu", device=torch.device("cpu"), ceilings=tight,
                    slugs=["non-local"], log=lambda _s: None)
    (curve,) = res["techniques"]["non-local"]["curves"]
    assert "peak memory" in curve["stopped"] or "ceiling" in curve["stopped"]
    assert all(p["peak_bytes"] <= (4 << 20) * 2 for p in curve["points"])
    assert curve["points"][-1]["x"] < 48 * 48


def test_expand_builds_every_input():
    mech = registry.get("co-attention-co-excitation")
    tp = Plan.model_validate({"tolerance": 0.3, "memory_floor_bytes": 0, "techniques": {
        "co-attention-co-excitation": {"fixed": {"B": 1, "C": 8, "Hq": 3, "Wq": 3},
                                       "symbols": {"N_{I}": ["H", "W"]},
                                       "curves": {"positions": {"dims": ["H", "W"], "sizes": [4, 8, 16]}}}}}
                             ).techniques["co-attention-co-excitation"]
    spec = expand(mech, tp, "positions")
    assert spec.points[1].shapes == {"x": (1, 8, 8, 8), "query": (1, 8, 3, 3)}
    assert symbol_weights(tp, spec)["N_{I}"] == pytest.approx(1.0)
