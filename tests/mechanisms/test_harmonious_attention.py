"""HA module against a NumPy transcription (explicit 3x3 stride-2 conv, hand-written bilinear resize,
conv+BN+ReLU blocks) of Li et al. Sec. 3.1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime
from tests.mechanisms.helpers import randomise_batchnorm

MECH = registry.get("harmonious-attention")
EPS = 1e-5


def block(x, sd, name, stride=1):
    """conv (explicit loops over kernel taps) + eval BatchNorm + ReLU; x [B, Cin, H, W]."""
    w, bias = sd[f"{name}.0.weight"], sd[f"{name}.0.bias"]
    k = w.shape[-1]
    p = k // 2
    b, cin, h, wd = x.shape
    ho, wo = (h + 2 * p - k) // stride + 1, (wd + 2 * p - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    y = np.zeros((b, w.shape[0], ho, wo)) + bias[None, :, None, None]
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            y[:, :, i, j] += np.einsum("bckl,ockl->bo", patch, w)
    sh = (1, -1, 1, 1)
    y = (y - sd[f"{name}.1.running_mean"].reshape(sh)) / np.sqrt(sd[f"{name}.1.running_var"].reshape(sh) + EPS) \
        * sd[f"{name}.1.weight"].reshape(sh) + sd[f"{name}.1.bias"].reshape(sh)
    return np.maximum(y, 0.0)


def bilinear_align_corners(x, h, w):
    b, c, hi, wi = x.shape
    out = np.zeros((b, c, h, w))
    for i in range(h):
        yi = i * (hi - 1) / (h - 1) if h > 1 else 0.0
        y0 = int(np.floor(yi))
        y1 = min(y0 + 1, hi - 1)
        fy = yi - y0
        for j in range(w):
            xj = j * (wi - 1) / (w - 1) if w > 1 else 0.0
            x0 = int(np.floor(xj))
            x1 = min(x0 + 1, wi - 1)
            fx = xj - x0
            out[:, :, i, j] = ((1 - fy) * (1 - fx) * x[:, :, y0, x0] + (1 - fy) * fx * x[:, :, y0, x1]
                               + fy * (1 - fx) * x[:, :, y1, x0] + fy * fx * x[:, :, y1, x1])
    return out


def numpy_ha(x, sd, regions, sw, sh):
    b, c, h, w = x.shape
    s = block(x.mean(axis=1, keepdims=True), sd, "spatial_conv", stride=2)
    s = block(bilinear_align_corners(s, h, w), sd, "spatial_scale")
    gap = x.mean(axis=(2, 3), keepdims=True)
    ch = block(block(gap, sd, "channel_down"), sd, "channel_up")
    soft = 1.0 / (1.0 + np.exp(-block(s * ch, sd, "fuse")))
    t = np.tanh(gap[:, :, 0, 0] @ sd["hard_fc.weight"].T + sd["hard_fc.bias"]).reshape(b, regions, 2)
    theta = np.zeros((b, regions, 2, 3))
    for n in range(b):
        for i in range(regions):
            theta[n, i] = [[sw, 0.0, t[n, i, 0]], [0.0, sh, t[n, i, 1]]]
    return x * soft, soft, s, ch[:, :, 0, 0], theta


@pytest.mark.parametrize("shape,params", [((2, 32, 8, 6), {}), ((1, 16, 7, 5), {"reduction": 4, "regions": 3})])
def test_matches_numpy_transcription(shape, params):
    x = torch.randn(*shape, dtype=torch.float64)
    resolved = MECH.validate({"x": shape}, params)
    module = runtime.build_module(MECH, {"x": shape}, resolved, seed=12, dtype=torch.float64)
    randomise_batchnorm(module, 1, bias_shift=0.2)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want = numpy_ha(x.numpy(), sd, resolved["regions"], resolved["region_scale_w"], resolved["region_scale_h"])
    got = runtime.forward(MECH, module, {"x": x})
    names = ("output", "soft_attention", "spatial_attention", "channel_attention", "regions")
    for name, w in zip(names, want, strict=True):
        np.testing.assert_allclose(got[name].numpy(), w, rtol=1e-11, atol=1e-12)


def test_soft_attention_between_half_and_one_and_translations_bounded():
    out = runtime.run(MECH, {"x": torch.randn(2, 32, 6, 6)}, seed=0)
    a = out["soft_attention"]
    assert ((a >= 0.5) & (a < 1)).all()
    t = out["regions"][..., 2]
    assert (t.abs() < 1).all()
    assert (out["regions"][..., 0, 0] == 1.0).all() and (out["regions"][..., 1, 1] == 0.25).all()
