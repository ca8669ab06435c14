"""ADL (Choe & Shim, CVPR 2019) against a NumPy transcription, plus sampling properties."""

from __future__ import annotations

import math

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("attention-dropout")


def numpy_adl(x, gamma):
    a = x.mean(axis=1)
    drop = np.ones_like(a)
    for b in range(a.shape[0]):
        drop[b][a[b] > gamma * a[b].max()] = 0.0
    return a, drop, 1 / (1 + np.exp(-a))


def test_maps_and_output_match_numpy():
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64)
    a, drop, imp = numpy_adl(x.numpy(), 0.8)
    for seed in range(6):
        out = runtime.run(MECH, {"x": x}, {"threshold": 0.8, "drop_rate": 0.5}, seed=seed, dtype=torch.float64)
        np.testing.assert_allclose(out["self_attention"].numpy(), a, rtol=1e-13)
        np.testing.assert_array_equal(out["drop_mask"].numpy(), drop)
        np.testing.assert_allclose(out["importance_map"].numpy(), imp, rtol=1e-13)
        chosen = drop if out["used_drop_mask"].item() == 1 else imp
        np.testing.assert_allclose(out["output"].numpy(), x.numpy() * chosen[:, None], rtol=1e-13)
        assert out["log_prob"].item() == math.log(0.5)


def test_choice_frequency_log_prob_and_determinism():
    x = torch.randn(2, 4, 5, 5)
    picks = []
    for seed in range(200):
        out = runtime.run(MECH, {"x": x}, {"drop_rate": 0.75}, seed=seed)
        used = out["used_drop_mask"].item()
        picks.append(used)
        assert math.isclose(out["log_prob"].item(), math.log(0.75 if used else 0.25), rel_tol=1e-6)
    assert 0.63 < np.mean(picks) < 0.87
    a = runtime.run(MECH, {"x": x}, seed=11)
    b = runtime.run(MECH, {"x": x}, seed=11)
    assert torch.equal(a["output"], b["output"]) and torch.equal(a["used_drop_mask"], b["used_drop_mask"])


def test_drop_mask_removes_the_most_activated_region_and_eval_is_identity():
    x = torch.zeros(1, 2, 4, 4)
    x[0, :, 1, 2] = 5.0
    out = runtime.run(MECH, {"x": x}, {"drop_rate": 1.0}, seed=0)
    assert out["used_drop_mask"].item() == 1 and out["drop_mask"][0, 1, 2] == 0
    assert out["output"][0, :, 1, 2].abs().sum() == 0 and out["drop_mask"].sum() == 15
    ev = runtime.run(MECH, {"x": x}, {"training": False}, seed=0)
    assert torch.equal(ev["output"], x) and ev["used_drop_mask"].item() == 0
