"""Clustered attention against a NumPy transcription of Vyas et al. Eqs. 6-8 (with its own loop-based
K-means), and, with one cluster per query, against torch.nn.MultiheadAttention (exact attention)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from service.mechanisms import registry, runtime
from service.mechanisms.base import MechanismInputError

MECH = registry.get("clustered-attention")


def numpy_kmeans(pts, k, iters):
    n = len(pts)
    cent = np.array([pts[(j * n) // k] for j in range(k)])
    for _ in range(iters):
        assign = np.array([int(np.argmin([((p - c) ** 2).sum() for c in cent])) for p in pts])
        for j in range(k):
            members = pts[assign == j]
            if len(members):
                cent[j] = members.mean(0)                                  # Eq. 6
    return assign, cent


def numpy_clustered(x, sd, heads, k, iters):
    b, n, d = x.shape
    dk = d // heads
    lin = {t: x @ sd[f"{t}_proj.weight"].T + sd[f"{t}_proj.bias"] for t in "qkv"}
    out = np.zeros((b, n, d))
    ac_all = np.zeros((b, heads, k, n))
    s_all = np.zeros((b, heads, n), dtype=np.int64)
    for bi in range(b):
        for h in range(heads):
            sl = slice(h * dk, (h + 1) * dk)
            q, kk, v = lin["q"][bi, :, sl], lin["k"][bi, :, sl], lin["v"][bi, :, sl]
            assign, cent = numpy_kmeans(q, k, iters)
            logits = cent @ kk.T / np.sqrt(dk)
            ac = np.exp(logits - logits.max(1, keepdims=True))
            ac /= ac.sum(1, keepdims=True)                                 # Eq. 7
            vc = ac @ v                                                    # Eq. 8
            out[bi, :, sl] = vc[assign]                                    # S V^c
            ac_all[bi, h], s_all[bi, h] = ac, assign
    return out @ sd["out_proj.weight"].T + sd["out_proj.bias"], ac_all, s_all


def _build(shape, dtype=torch.float64, seed=0, **params):
    p = MECH.validate({"x": shape}, params)
    return runtime.build_module(MECH, {"x": shape}, p, seed=seed, dtype=dtype)


def test_matches_numpy_equations():
    x = torch.randn(2, 40, 12, dtype=torch.float64)
    module = _build(x.shape, seed=2, heads=3, clusters=6, iterations=5)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, want_ac, want_s = numpy_clustered(x.numpy(), sd, 3, 6, 5)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_array_equal(got["clusters"].numpy(), want_s)
    np.testing.assert_allclose(got["cluster_attention"].numpy(), want_ac, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-12)
    assert len(np.unique(want_s[0, 0])) > 1


def test_one_cluster_per_query_is_exact_multihead_attention():
    d, h, n = 16, 4, 11
    module = _build((2, n, d), dtype=torch.float32, seed=1, heads=h, clusters=n)
    sd = module.state_dict()
    mha = nn.MultiheadAttention(d, h, batch_first=True).eval()
    mha.load_state_dict({
        "in_proj_weight": torch.cat([sd["q_proj.weight"], sd["k_proj.weight"], sd["v_proj.weight"]]),
        "in_proj_bias": torch.cat([sd["q_proj.bias"], sd["k_proj.bias"], sd["v_proj.bias"]]),
        "out_proj.weight": sd["out_proj.weight"], "out_proj.bias": sd["out_proj.bias"]})
    x = torch.randn(2, n, d)
    with torch.no_grad():
        ours = module(x)
        theirs, theirs_w = mha(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(ours["output"], theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["attention"], theirs_w, rtol=1e-5, atol=1e-6)


def test_cluster_structure():
    x = torch.randn(1, 64, 16)
    out = runtime.run(MECH, {"x": x}, {"heads": 2, "clusters": 5}, seed=0)
    att, s = out["attention"], out["clusters"]
    torch.testing.assert_close(out["cluster_attention"].sum(-1), torch.ones(1, 2, 5))
    for h in range(2):
        for j in s[0, h].unique():
            rows = att[0, h, s[0, h] == j]
            assert torch.equal(rows, rows[:1].expand_as(rows))              # queries share their cluster's row
    fused = runtime.run(MECH, {"x": x}, {"heads": 2, "clusters": 5}, seed=0, need_weights=False)
    assert set(fused) == {"output"}


def test_constraints():
    with pytest.raises(MechanismInputError, match="exceeds"):
        MECH.validate({"x": (1, 50, 16)})
    with pytest.raises(MechanismInputError, match="divisible"):
        MECH.validate({"x": (1, 200, 20)})
