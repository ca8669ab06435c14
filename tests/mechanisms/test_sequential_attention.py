"""Sequential attention against a NumPy transcription (explicit blur, GRU equations, replayed draws)."""

from __future__ import annotations

import math

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("sequential-attention")


def sig(z):
    return 1 / (1 + np.exp(-z))


def blur(s, k, sigma):
    r = np.arange(k) - (k - 1) / 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    h, w = s.shape
    out = np.zeros_like(s)
    for i in range(h):
        for j in range(w):
            for a in range(k):
                for b in range(k):
                    ii, jj = i + a - k // 2, j + b - k // 2
                    if 0 <= ii < h and 0 <= jj < w:
                        out[i, j] += g[a, b] * s[ii, jj]
    return out


def gru(sd, x, h):
    wi, wh, bi, bh = sd["rnn.weight_ih"], sd["rnn.weight_hh"], sd["rnn.bias_ih"], sd["rnn.bias_hh"]
    n = h.shape[0]
    gi, gh = wi @ x + bi, wh @ h + bh
    r = sig(gi[:n] + gh[:n])
    z = sig(gi[n:2 * n] + gh[n:2 * n])
    c = np.tanh(gi[2 * n:] + r * gh[2 * n:])
    return (1 - z) * c + z * h


def test_matches_numpy_with_replayed_draws():
    a = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    params = MECH.resolve_params({"classes": 3, "steps": 3, "hidden": 5, "kernel_size": 3, "sigma": 0.8})
    module = runtime.build_module(MECH, {"activations": a.shape}, params, seed=2, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    got = runtime.forward(MECH, module, {"activations": a}, seed=8)
    g = torch.Generator().manual_seed(8)
    us = [torch.rand(2, generator=g, dtype=torch.float64).numpy() for _ in range(3)]
    for b in range(2):
        x = a[b].numpy()
        s = sig(np.einsum("c,chw->hw", sd["saliency.weight"][0, :, 0, 0], x) + sd["saliency.bias"][0])
        h = np.zeros(5)
        for t in range(3):
            np.testing.assert_allclose(got["saliency"][b, t].numpy(), s, rtol=1e-10, atol=1e-14)
            m = blur(s, 3, 0.8)
            m /= m.max()
            glimpse = (m[None] * x).sum((1, 2)) / m.sum()
            h = gru(sd, glimpse, h)
            z = sd["policy.weight"] @ h + sd["policy.bias"]
            p = np.exp(z - z.max())
            p /= p.sum()
            y = int(np.searchsorted(np.cumsum(p), us[t][b], side="right"))
            np.testing.assert_allclose(got["masks"][b, t].numpy(), m, rtol=1e-10, atol=1e-14)
            np.testing.assert_allclose(got["output"][b, t].numpy(), p, rtol=1e-10)
            assert got["labels"][b, t].item() == y
            np.testing.assert_allclose(got["log_prob"][b, t].item(), math.log(p[y]), rtol=1e-10)
            s = s * (1 - m)


def test_inhibition_of_return_lowers_the_attended_peak():
    a = torch.randn(1, 4, 9, 9)
    sal = torch.zeros(1, 9, 9)
    sal[0, 2, 2], sal[0, 6, 7] = 1.0, 0.6
    out = runtime.run(MECH, {"activations": a, "saliency": sal}, {"steps": 2, "sigma": 0.7, "kernel_size": 3})
    m = out["masks"][0]
    assert m[0].flatten().argmax().item() == 2 * 9 + 2      # first look at the strongest salient point
    assert m[1].flatten().argmax().item() == 6 * 9 + 7      # then, inhibited, at the second one
    assert ((out["masks"] >= 0) & (out["masks"] <= 1 + 1e-6)).all()
