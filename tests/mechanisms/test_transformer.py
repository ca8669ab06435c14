"""Transformer encoder layer against a NumPy transcription of Vaswani et al. (Eq. 1, Sec. 3.2.2, Eq. 2,
Sec. 3.1, Sec. 3.5) and against torch.nn.MultiheadAttention / nn.TransformerEncoderLayer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from service.mechanisms import registry, runtime
from service.mechanisms.base import MechanismInputError

MECH = registry.get("transformer")


def _ln(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def numpy_encoder_layer(x, sd, heads, causal=False, pe=False):
    b, n, d = x.shape
    if pe:
        enc = np.zeros((n, d))
        for pos in range(n):
            for j in range(d):
                i2 = j - (j % 2)
                ang = pos / 10000 ** (i2 / d)
                enc[pos, j] = np.sin(ang) if j % 2 == 0 else np.cos(ang)
        x = x + enc
    dk = d // heads
    wq, wk, wv, wo = (sd[f"self_attn.{name}_proj.weight"] for name in ("q", "k", "v", "out"))
    att = np.zeros((b, heads, n, n))
    mh = np.zeros((b, n, d))
    for bi in range(b):
        for h in range(heads):
            rows = slice(h * dk, (h + 1) * dk)
            q = x[bi] @ wq[rows].T          # x W_i^Q
            k = x[bi] @ wk[rows].T
            v = x[bi] @ wv[rows].T
            s = q @ k.T / np.sqrt(dk)
            if causal:
                s = np.where(np.tril(np.ones((n, n))) > 0, s, -np.inf)
            e = np.exp(s - s.max(-1, keepdims=True))
            a = e / e.sum(-1, keepdims=True)
            att[bi, h] = a
            mh[bi, :, rows] = a @ v           # Concat(head_1..head_h)
    y = _ln(x + mh @ wo.T, sd["norm1.weight"], sd["norm1.bias"])
    f = np.maximum(y @ sd["ffn1.weight"].T + sd["ffn1.bias"], 0) @ sd["ffn2.weight"].T + sd["ffn2.bias"]
    return _ln(y + f, sd["norm2.weight"], sd["norm2.bias"]), att


def _build(shape, seed=0, dtype=torch.float64, **params):
    p = MECH.validate({"x": shape}, params)
    return runtime.build_module(MECH, {"x": shape}, p, seed=seed, dtype=dtype)


def test_matches_numpy_equations():
    for params in ({"heads": 4}, {"heads": 2, "causal": True, "positional_encoding": True}):
        x = torch.randn(2, 6, 16, dtype=torch.float64)
        module = _build(x.shape, seed=3, **params)
        sd = {k: v.numpy() for k, v in module.state_dict().items()}
        want, want_att = numpy_encoder_layer(x.numpy(), sd, params["heads"], params.get("causal", False),
                                             params.get("positional_encoding", False))
        got = runtime.forward(MECH, module, {"x": x})
        np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got["attention"].numpy(), want_att, rtol=1e-10, atol=1e-12)


def test_attention_sublayer_matches_torch_multihead_attention():
    d, h = 32, 4
    module = _build((2, 9, d), seed=1, dtype=torch.float32, heads=h)
    sd = module.state_dict()
    mha = nn.MultiheadAttention(d, h, bias=False, batch_first=True).eval()
    mha.load_state_dict({
        "in_proj_weight": torch.cat([sd["self_attn.q_proj.weight"], sd["self_attn.k_proj.weight"],
                                     sd["self_attn.v_proj.weight"]]),
        "out_proj.weight": sd["self_attn.out_proj.weight"]})
    x = torch.randn(2, 9, d)
    with torch.no_grad():
        ours, ours_w = module.self_attn(x)
        theirs, theirs_w = mha(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_w, theirs_w, rtol=1e-5, atol=1e-6)


def test_layer_matches_torch_transformer_encoder_layer():
    d, h = 32, 8
    for causal in (False, True):
        module = _build((2, 9, d), seed=2, dtype=torch.float32, heads=h, causal=causal)
        sd = module.state_dict()
        ref = nn.TransformerEncoderLayer(d, h, dim_feedforward=4 * d, dropout=0.0, activation="relu",
                                         batch_first=True, norm_first=False).eval()
        ref.load_state_dict({
            "self_attn.in_proj_weight": torch.cat([sd["self_attn.q_proj.weight"], sd["self_attn.k_proj.weight"],
                                                   sd["self_attn.v_proj.weight"]]),
            "self_attn.in_proj_bias": torch.zeros(3 * d),
            "self_attn.out_proj.weight": sd["self_attn.out_proj.weight"],
            "self_attn.out_proj.bias": torch.zeros(d),
            "linear1.weight": sd["ffn1.weight"], "linear1.bias": sd["ffn1.bias"],
            "linear2.weight": sd["ffn2.weight"], "linear2.bias": sd["ffn2.bias"],
            "norm1.weight": sd["norm1.weight"], "norm1.bias": sd["norm1.bias"],
            "norm2.weight": sd["norm2.weight"], "norm2.bias": sd["norm2.bias"]})
        x = torch.randn(2, 9, d)
        mask = nn.Transformer.generate_square_subsequent_mask(9) if causal else None
        with torch.no_grad():
            torch.testing.assert_close(module(x)["output"], ref(x, src_mask=mask, is_causal=causal),
                                       rtol=1e-5, atol=1e-5)


def test_rows_sum_to_one_causal_zeros_and_permutation_equivariance():
    x = torch.randn(2, 7, 16)
    out = runtime.run(MECH, {"x": x}, {"heads": 4}, seed=0)
    torch.testing.assert_close(out["attention"].sum(-1), torch.ones(2, 4, 7))
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    out_p = runtime.run(MECH, {"x": x[:, perm]}, {"heads": 4}, seed=0)
    torch.testing.assert_close(out_p["output"], out["output"][:, perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_p["attention"], out["attention"][:, :, perm][:, :, :, perm])
    causal = runtime.run(MECH, {"x": x}, {"heads": 4, "causal": True}, seed=0)["attention"]
    assert torch.all(causal.triu(1) == 0)
    # the first position can only attend to itself
    torch.testing.assert_close(causal[..., 0, 0], torch.ones(2, 4))


def test_constraint_messages():
    with pytest.raises(MechanismInputError, match="divisible by heads"):
        MECH.validate({"x": (1, 4, 10)}, {"heads": 3})
