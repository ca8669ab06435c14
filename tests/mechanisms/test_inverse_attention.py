"""Inverse attention (Sindagi & Patel, 2019) against a NumPy transcription with direct convolutions."""

from __future__ import annotations

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("inverse-attention")


def conv2d(x, w, b):
    cout, cin, k, _ = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    h, wd = x.shape[1:]
    out = np.zeros((cout, h, wd))
    for i in range(h):
        for j in range(wd):
            out[:, i, j] = np.einsum("ocab,cab->o", w, xp[:, i:i + k, j:j + k]) + b
    return out


def test_matches_numpy_transcription():
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    module = runtime.build_module(MECH, {"x": x.shape}, {"hidden": 7}, seed=3, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    got = runtime.forward(MECH, module, {"x": x})
    for b in range(2):
        f = x.numpy()[b]
        z = np.maximum(conv2d(f, sd["conv1.weight"], sd["conv1.bias"]), 0)
        z = np.maximum(conv2d(z, sd["conv2.weight"], sd["conv2.bias"]), 0)
        a = 1 / (1 + np.exp(-conv2d(z, sd["conv3.weight"], sd["conv3.bias"])[0]))
        np.testing.assert_allclose(got["inverse_attention"][b].numpy(), a, rtol=1e-12)
        np.testing.assert_allclose(got["output"][b].numpy(), f - a * f, rtol=1e-12, atol=1e-14)


def test_output_is_input_scaled_by_complement():
    x = torch.randn(2, 16, 6, 5)
    out = runtime.run(MECH, {"x": x}, seed=0)
    a = out["inverse_attention"]
    assert ((a > 0) & (a < 1)).all()
    torch.testing.assert_close(out["output"], x * (1 - a)[:, None])
