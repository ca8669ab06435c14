"""Swin block against an independent NumPy formulation and against timm's SwinTransformerBlock.

The NumPy version never rolls or partitions the map: it works on all H*W tokens at once and builds,
pair by pair, which tokens may attend to each other after the cyclic shift (same window of the
shifted map and same sub-window) and the relative-position bias of that pair, then runs one masked
softmax over the whole map. This is the paper's definition of SW-MSA (Sec. 3.2) written differently
from the module's batched windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime
from service.mechanisms.base import MechanismInputError

MECH = registry.get("swin-transformer")


def _ln(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b


def _region(pos, size, m, s):
    """sub-window label along one axis of the shifted map (the three stripes of Fig. 4)."""
    return 0 if pos < size - m else (1 if pos < size - s else 2)


def numpy_swin(x, sd, m, head_dim, shift):
    b, c, h, w = x.shape
    heads = c // head_dim
    z = x.transpose(0, 2, 3, 1).reshape(b, h * w, c)
    n = h * w
    allowed = np.zeros((n, n), bool)
    bias = np.zeros((heads, n, n))
    table = sd["relative_position_bias_table"]
    for p1 in range(n):
        # position of the token in the shifted map: shifted[i'] = original[(i' + s) mod H]
        i1, j1 = (p1 // w - shift) % h, (p1 % w - shift) % w
        for p2 in range(n):
            i2, j2 = (p2 // w - shift) % h, (p2 % w - shift) % w
            same_window = i1 // m == i2 // m and j1 // m == j2 // m
            same_region = (not shift) or (_region(i1, h, m, shift) == _region(i2, h, m, shift)
                                          and _region(j1, w, m, shift) == _region(j2, w, m, shift))
            allowed[p1, p2] = same_window and same_region
            di, dj = i1 % m - i2 % m + m - 1, j1 % m - j2 % m + m - 1
            bias[:, p1, p2] = table[di * (2 * m - 1) + dj]
    y = _ln(z, sd["norm1.weight"], sd["norm1.bias"])
    qkv = y @ sd["qkv.weight"].T + sd["qkv.bias"]
    out = np.zeros_like(z)
    att = np.zeros((b, heads, n, n))
    for hd in range(heads):
        q = qkv[..., hd * head_dim:(hd + 1) * head_dim]
        k = qkv[..., c + hd * head_dim:c + (hd + 1) * head_dim]
        v = qkv[..., 2 * c + hd * head_dim:2 * c + (hd + 1) * head_dim]
        s = np.einsum("bnd,bmd->bnm", q, k) / math.sqrt(head_dim) + bias[hd]
        s = np.where(allowed, s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        att[:, hd] = a
        out[..., hd * head_dim:(hd + 1) * head_dim] = np.einsum("bnm,bmd->bnd", a, v)
    z1 = z + out @ sd["proj.weight"].T + sd["proj.bias"]
    f = _ln(z1, sd["norm2.weight"], sd["norm2.bias"]) @ sd["fc1.weight"].T + sd["fc1.bias"]
    f = 0.5 * f * (1 + np.vectorize(math.erf)(f / math.sqrt(2)))
    z2 = z1 + f @ sd["fc2.weight"].T + sd["fc2.bias"]
    return z2.reshape(b, h, w, c).transpose(0, 3, 1, 2), att


def _build(shape, seed=0, dtype=torch.float64, **params):
    p = MECH.validate({"x": shape}, params)
    return runtime.build_module(MECH, {"x": shape}, p, seed=seed, dtype=dtype)


@pytest.mark.parametrize("shifted", [True, False])
def test_matches_numpy_equations(shifted):
    m, hd = 3, 4
    x = torch.randn(2, 8, 6, 9, dtype=torch.float64)
    module = _build(x.shape, seed=4, window_size=m, head_dim=hd, shifted=shifted)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, want_att = numpy_swin(x.numpy(), sd, m, hd, 1 if shifted else 0)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-10)
    # the module's per-window weights are the diagonal blocks of the global masked attention
    att = got["attention"].numpy()                                   # [B, nW, h, M^2, M^2]
    h, w = 6, 9
    for wi in range(h // m):
        for wj in range(w // m):
            idx = [(((wi * m + a) + (1 if shifted else 0)) % h) * w + ((wj * m + bb) + (1 if shifted else 0)) % w
                   for a in range(m) for bb in range(m)]
            block = want_att[:, :, idx][:, :, :, idx]
            np.testing.assert_allclose(att[:, wi * (w // m) + wj], block, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shift", [0, 3])
def test_conforms_to_timm_swin_block(timm_layers, shift):
    import timm.models.swin_transformer as swin

    c, h, w, m = 64, 14, 21, 7
    module = _build((2, c, h, w), seed=1, dtype=torch.float32, window_size=m, head_dim=32, shifted=bool(shift))
    theirs = swin.SwinTransformerBlock(c, (h, w), num_heads=2, window_size=m, shift_size=shift,
                                       mlp_ratio=4.0, qkv_bias=True).eval()
    sd = module.state_dict()
    names = {"attn.qkv": "qkv", "attn.proj": "proj", "mlp.fc1": "fc1", "mlp.fc2": "fc2", "norm1": "norm1",
             "norm2": "norm2"}
    state = {f"{a}.{t}": sd[f"{b}.{t}"] for a, b in names.items() for t in ("weight", "bias")}
    state["attn.relative_position_bias_table"] = sd["relative_position_bias_table"]
    theirs.load_state_dict(state, strict=False)
    assert set(theirs.state_dict()) - set(state) <= {"attn.relative_position_index", "attn_mask"}
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        want = theirs(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(module(x)["output"], want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(module(x, need_weights=False)["output"], want, rtol=1e-5, atol=1e-5)


def test_mask_blocks_wrapped_tokens_and_rows_sum_to_one():
    x = torch.randn(1, 32, 14, 14)
    out = runtime.run(MECH, {"x": x}, {"head_dim": 16}, seed=0)["attention"]  # shifted, M = 7, s = 3
    assert out.shape == (1, 4, 2, 49, 49)
    torch.testing.assert_close(out.sum(-1), torch.ones(1, 4, 2, 49))
    # last window (bottom right) holds four sub-windows of 4x4, 4x3, 3x4, 3x3 tokens
    last = out[0, 3, 0]
    assert (last > 0).sum(-1).tolist()[0] == 16 and (last > 0).sum(-1).tolist()[-1] == 9
    # first window is untouched by the roll: no masking
    assert (out[0, 0] > 0).all()


def test_benchmark_input_and_constraints():
    out = runtime.run(MECH, {"x": torch.randn(8, 256, 28, 28)}, seed=0, need_weights=False)
    assert out["output"].shape == (8, 256, 28, 28)
    with pytest.raises(MechanismInputError, match="window_size"):
        MECH.validate({"x": (1, 64, 28, 30)})
    with pytest.raises(MechanismInputError, match="head_dim"):
        MECH.validate({"x": (1, 48, 28, 28)})
