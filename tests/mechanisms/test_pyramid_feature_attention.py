"""Pyramid feature attention against a NumPy transcription of Zhao & Wu Sec. 3.1-3.2 with hand-written
(dilated, separable) convolutions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("pyramid-feature-attention")


def conv2d(x, w, b, dil=1):
    """'same' convolution of x [B, C, H, W] with w [O, C, kh, kw] (odd kernels), by explicit loops."""
    bsz, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    ph, pw = dil * (kh // 2), dil * (kw // 2)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((bsz, o, h, wd))
    for i in range(h):
        for j in range(wd):
            patch = xp[:, :, i:i + 2 * ph + 1:dil, j:j + 2 * pw + 1:dil]
            out[:, :, i, j] = np.einsum("bcuv,ocuv->bo", patch, w) + b
    return out


def numpy_pfa(low, high, sd, cpfe):
    if cpfe:
        parts = [conv2d(high, sd["cpfe_1x1.weight"], sd["cpfe_1x1.bias"])]
        parts += [conv2d(high, sd[f"cpfe_atrous.{i}.weight"], sd[f"cpfe_atrous.{i}.bias"], d)
                  for i, d in enumerate((3, 5, 7))]
        high = np.concatenate(parts, 1)
    v = high.mean((2, 3))
    ca = 1 / (1 + np.exp(-(np.maximum(v @ sd["fc1.weight"].T + sd["fc1.bias"], 0) @ sd["fc2.weight"].T
                            + sd["fc2.bias"])))
    fh = high * ca[:, :, None, None]
    c1 = conv2d(conv2d(fh, sd["branch1_a.weight"], sd["branch1_a.bias"]), sd["branch1_b.weight"], sd["branch1_b.bias"])
    c2 = conv2d(conv2d(fh, sd["branch2_a.weight"], sd["branch2_a.bias"]), sd["branch2_b.weight"], sd["branch2_b.bias"])
    sa = 1 / (1 + np.exp(-(c1 + c2)))
    return low * sa, fh, ca, sa


@pytest.mark.parametrize("cpfe", [True, False])
def test_matches_numpy_equations(cpfe):
    low = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    high = torch.randn(2, 6, 9, 8, dtype=torch.float64)
    shapes = {"low": low.shape, "high": high.shape}
    p = MECH.validate(shapes, {"cpfe": cpfe, "cpfe_channels": 2, "reduction": 2, "kernel_size": 5})
    module = runtime.build_module(MECH, shapes, p, seed=3, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, fh, ca, sa = numpy_pfa(low.numpy(), high.numpy(), sd, cpfe)
    got = runtime.forward(MECH, module, {"low": low, "high": high})
    for name, ref in (("output", want), ("high_attended", fh), ("channel_weights", ca), ("spatial_map", sa)):
        np.testing.assert_allclose(got[name].numpy(), ref, rtol=1e-10, atol=1e-12)


def test_gates_in_unit_interval_and_output_is_gated_low():
    low, high = torch.randn(2, 4, 16, 16), torch.randn(2, 32, 16, 16)
    out = runtime.run(MECH, {"low": low, "high": high}, seed=0)
    for name in ("channel_weights", "spatial_map"):
        assert ((out[name] > 0) & (out[name] < 1)).all()
    torch.testing.assert_close(out["output"], low * out["spatial_map"])
    assert out["high_attended"].shape == (2, 128, 16, 16)
