"""Boosted attention against a NumPy transcription with explicit location loops."""

from __future__ import annotations

import math

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("boosted-attention")


def test_matches_numpy_loops():
    v, h = torch.randn(2, 5, 3, 4, dtype=torch.float64), torch.randn(2, 7, dtype=torch.float64)
    params = MECH.resolve_params({"att_dim": 6, "epsilon": 1.5})
    module = runtime.build_module(MECH, {"features": v.shape, "hidden": h.shape}, params, seed=1, dtype=torch.float64)
    sd = {k: t.numpy() for k, t in module.state_dict().items()}
    got = runtime.forward(MECH, module, {"features": v, "hidden": h})
    for b in range(2):
        scores, feats, sal = [], [], np.zeros((3, 4))
        for i in range(3):
            for j in range(4):
                x = v[b, :, i, j].numpy()
                s = 1 / (1 + math.exp(-(sd["saliency.weight"][0, :, 0, 0] @ x + sd["saliency.bias"][0])))
                sal[i, j] = s
                xb = x * math.log(s + 1.5)
                feats.append(xb)
                pre = sd["w_v.weight"] @ xb + sd["w_v.bias"] + sd["w_h.weight"] @ h[b].numpy()
                scores.append(sd["w.weight"][0] @ np.tanh(pre))
        a = np.exp(np.array(scores) - max(scores))
        a /= a.sum()
        ctx = (a[:, None] * np.stack(feats)).sum(0)
        np.testing.assert_allclose(got["output"][b].numpy(), ctx, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got["attention"][b].numpy(), a.reshape(3, 4), rtol=1e-10)
        np.testing.assert_allclose(got["saliency"][b].numpy(), sal, rtol=1e-10)


def test_more_salient_positions_are_boosted_more():
    v, h = torch.randn(2, 4, 5, 5), torch.randn(2, 3)
    out = runtime.run(MECH, {"features": v, "hidden": h})
    torch.testing.assert_close(out["attention"].sum((1, 2)), torch.ones(2))
    factor = torch.log(out["saliency"] + math.e)
    assert (factor > 1).all()
    order = out["saliency"].flatten().argsort()
    assert (factor.flatten()[order].diff() >= 0).all()
