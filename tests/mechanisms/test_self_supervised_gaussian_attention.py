"""Gaussian attention (GATCluster) against a NumPy transcription with explicit position loops."""

from __future__ import annotations

import math

import numpy as np
import torch

from service.mechanisms import registry, runtime
from service.mechanisms.self_supervised_gaussian_attention import attention_target

MECH = registry.get("self-supervised-gaussian-attention")


def numpy_gaussian_attention(f, sd, lam):
    b, c, h, w = f.shape
    wc, bc = sd["att_conv.weight"][:, :, 0, 0], sd["att_conv.bias"]
    scale = sd["att_bn.weight"] / np.sqrt(sd["att_bn.running_var"] + 1e-5)
    pooled, maps, thetas = np.zeros((b, c)), np.zeros((b, h, w)), np.zeros((b, 3))
    for n in range(b):
        fa = np.zeros((wc.shape[0], h, w))
        for i in range(h):
            for j in range(w):
                y = (wc @ f[n, :, i, j] + bc - sd["att_bn.running_mean"]) * scale + sd["att_bn.bias"]
                fa[:, i, j] = np.maximum(y, 0)
        t = 1 / (1 + np.exp(-(sd["theta.weight"] @ fa.reshape(-1) + sd["theta.bias"])))
        for i in range(h):
            for j in range(w):
                u = (i / max(h - 1, 1), j / max(w - 1, 1))
                maps[n, i, j] = math.exp(-((u[0] - t[0]) ** 2 + (u[1] - t[1]) ** 2) / (2 * lam * t[2] + 1e-5))
                pooled[n] += maps[n, i, j] * f[n, :, i, j]
        thetas[n] = t
    return pooled, maps, thetas


def test_matches_numpy_loops():
    f = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    module = runtime.build_module(MECH, {"features": f.shape}, MECH.resolve_params({"att_channels": 3, "lam": 0.1}),
                                  seed=7, dtype=torch.float64)
    with torch.no_grad():
        module.att_bn.running_mean.uniform_(-0.3, 0.3)
        module.att_bn.running_var.uniform_(0.5, 2.0)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    got = runtime.forward(MECH, module, {"features": f})
    pooled, maps, thetas = numpy_gaussian_attention(f.numpy(), sd, 0.1)
    np.testing.assert_allclose(got["output"].numpy(), pooled, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["attention_map"].numpy(), maps, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["gaussian_params"].numpy(), thetas, rtol=1e-10)


def test_map_peaks_at_the_predicted_centre():
    f = torch.randn(3, 4, 9, 9, dtype=torch.float64)
    module = runtime.build_module(MECH, {"features": f.shape}, MECH.defaults(), seed=1, dtype=torch.float64)
    with torch.no_grad():  # place the centre exactly on a grid point: (mu_1, mu_2) = (0.25, 0.75)
        module.theta.weight.zero_()
        module.theta.bias.copy_(torch.logit(torch.tensor([0.25, 0.75, 0.5], dtype=torch.float64)))
    out = runtime.forward(MECH, module, {"features": f})
    amap = out["attention_map"]
    assert ((amap > 0) & (amap <= 1)).all()
    flat = amap.flatten(1).argmax(1)
    assert (flat == 2 * 9 + 6).all()     # row 0.25*8 = 2, column 0.75*8 = 6


def test_attention_target_sharpens_and_normalises():
    g = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(6, 4, dtype=torch.float64, generator=g), 1)
    t = attention_target(q)
    want = (q ** 2 / q.sum(0)).numpy()
    want /= want.sum(1, keepdims=True)
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-4)
    torch.testing.assert_close(t.sum(1), torch.ones(6, dtype=torch.float64), rtol=1e-4, atol=1e-4)  # eps in the sum
    # with equal cluster frequencies the division by them cancels, and squaring sharpens every row
    balanced = torch.cat([q, q.roll(1, 1), q.roll(2, 1), q.roll(3, 1)])   # every column sums alike
    tb = attention_target(balanced)
    assert (tb.max(1).values >= balanced.max(1).values - 1e-9).all()
