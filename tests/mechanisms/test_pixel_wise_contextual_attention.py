"""PiCANet against NumPy transcriptions of Liu et al. Eqs. 1-3: a hand-written bidirectional LSTM ReNet
(gates i, f, g, o) for the global form and explicit dilated-neighbourhood loops for the local form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime
from service.mechanisms.base import MechanismInputError

MECH = registry.get("pixel-wise-contextual-attention")


def _sig(z):
    return 1 / (1 + np.exp(-z))


def _lstm_dir(seq, wi, wh, bi, bh):
    n = wh.shape[1]
    h, c = np.zeros(n), np.zeros(n)
    out = []
    for xt in seq:
        g = wi @ xt + bi + wh @ h + bh
        i, f, gg, o = _sig(g[:n]), _sig(g[n:2 * n]), np.tanh(g[2 * n:3 * n]), _sig(g[3 * n:])
        c = f * c + i * gg
        h = o * np.tanh(c)
        out.append(h)
    return np.array(out)


def _bilstm(seq, sd, name):
    fw = _lstm_dir(seq, *(sd[f"{name}.{p}_l0"] for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    bw = _lstm_dir(seq[::-1], *(sd[f"{name}.{p}_l0_reverse"] for p in ("weight_ih", "weight_hh", "bias_ih",
                                                                          "bias_hh")))[::-1]
    return np.concatenate([fw, bw], -1)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_global(x, sd, g):
    b, c, h, w = x.shape
    out = np.zeros_like(x)
    att = []
    for bi in range(b):
        rows = np.stack([_bilstm(x[bi, :, i, :].T, sd, "renet_h") for i in range(h)])       # [H, W, 2n]
        cols = np.stack([_bilstm(rows[:, j], sd, "renet_v") for j in range(w)], 1)           # [H, W, 2n]
        alpha = _softmax(cols @ sd["logits.weight"][:, :, 0, 0].T + sd["logits.bias"])      # [H, W, D]
        if g:
            pos = [(r * (h - 1) // (g - 1), s * (w - 1) // (g - 1)) for r in range(g) for s in range(g)]
        else:
            pos = [(r, s) for r in range(h) for s in range(w)]
        ctx = np.stack([x[bi, :, r, s] for r, s in pos])                                       # [D, C]
        out[bi] = (alpha @ ctx).transpose(2, 0, 1)
        att.append(alpha)
    return out, np.stack(att)


def numpy_local(x, sd, k, dil):
    b, c, h, w = x.shape
    pad = dil * (k // 2)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    wc = sd["conv.weight"]
    mid = np.zeros((b, wc.shape[0], h, w))
    for i in range(h):
        for j in range(w):
            patch = xp[:, :, i:i + 2 * pad + 1:dil, j:j + 2 * pad + 1:dil]                    # [B, C, k, k]
            mid[:, :, i, j] = np.einsum("bcuv,ocuv->bo", patch, wc) + sd["conv.bias"]
    alpha = _softmax(np.einsum("bohw,do->bhwd", np.maximum(mid, 0), sd["logits.weight"][:, :, 0, 0])
                     + sd["logits.bias"])
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            patch = xp[:, :, i:i + 2 * pad + 1:dil, j:j + 2 * pad + 1:dil].reshape(b, c, k * k)
            out[:, :, i, j] = np.einsum("bd,bcd->bc", alpha[:, i, j], patch)
    return out, alpha


@pytest.mark.parametrize("grid", [3, 0])
def test_global_matches_numpy(grid):
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    p = MECH.validate({"x": x.shape}, {"mode": "global", "grid_size": grid, "lstm_hidden": 4})
    module = runtime.build_module(MECH, {"x": x.shape}, p, seed=1, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, att = numpy_global(x.numpy(), sd, grid)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["attention"].numpy(), att, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-12)


def test_local_matches_numpy():
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    p = MECH.validate({"x": x.shape}, {"mode": "local", "kernel_size": 3, "dilation": 2, "conv_channels": 4})
    module = runtime.build_module(MECH, {"x": x.shape}, p, seed=1, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, att = numpy_local(x.numpy(), sd, 3, 2)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["attention"].numpy(), att, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-12)


def test_paper_grid_on_28():
    from service.mechanisms.pixel_wise_contextual_attention import grid_index
    assert grid_index(28, 10).tolist() == list(range(0, 28, 3))         # 10 x 10 grid, dilation 3
    out = runtime.run(MECH, {"x": torch.randn(2, 64, 28, 28)}, {"lstm_hidden": 32}, seed=0)
    assert out["attention"].shape == (2, 28, 28, 100)
    torch.testing.assert_close(out["attention"].sum(-1), torch.ones(2, 28, 28))
    with pytest.raises(MechanismInputError, match="grid_size"):
        MECH.validate({"x": (1, 4, 8, 8)})
