"""Position-sensitive axial attention against a loop-by-position NumPy transcription of
Axial-DeepLab Eq. 4 (height axis, then width axis), plus reduction to torch's multi-head attention
when the positional terms are zero."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from service.mechanisms import registry, runtime

MECH = registry.get("axial-attention")


def numpy_axis(seqs, wqkv, rq, rk, rv, heads):
    """seqs [S, L, C]: independent 1-D sequences along the axis. Eq. 4 one output position at a time."""
    s_, n, c = seqs.shape
    d = c // heads
    wq, wk, wv = wqkv[:c], wqkv[c:2 * c], wqkv[2 * c:]
    out = np.zeros_like(seqs)
    att = np.zeros((s_, heads, n, n))
    for s in range(s_):
        q, k, v = seqs[s] @ wq.T, seqs[s] @ wk.T, seqs[s] @ wv.T
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            for o in range(n):
                logit = np.array([q[o, sl] @ k[p, sl] + q[o, sl] @ rq[p - o + n - 1] + k[p, sl] @ rk[p - o + n - 1]
                                  for p in range(n)])
                a = np.exp(logit - logit.max())
                a /= a.sum()
                out[s, o, sl] = sum(a[p] * (v[p, sl] + rv[p - o + n - 1]) for p in range(n))
                att[s, h, o] = a
    return out, att


def test_matches_numpy_eq4_height_then_width():
    b, c, h, w, heads = 2, 8, 4, 3, 2
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    module = runtime.build_module(MECH, {"x": x.shape}, {"heads": heads}, seed=1, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    cols = x.numpy().transpose(0, 3, 2, 1).reshape(b * w, h, c)                       # every column
    y, a_h = numpy_axis(cols, sd["height.qkv.weight"], sd["height.rel_q"], sd["height.rel_k"],
                        sd["height.rel_v"], heads)
    rows = y.reshape(b, w, h, c).transpose(0, 2, 1, 3).reshape(b * h, w, c)            # every row
    z, a_w = numpy_axis(rows, sd["width.qkv.weight"], sd["width.rel_q"], sd["width.rel_k"],
                        sd["width.rel_v"], heads)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["height_attention"].numpy(),
                               a_h.reshape(b, w, heads, h, h).transpose(0, 2, 1, 3, 4), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["width_attention"].numpy(),
                               a_w.reshape(b, h, heads, w, w).transpose(0, 2, 1, 3, 4), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), z.reshape(b, h, w, c).transpose(0, 3, 1, 2),
                               rtol=1e-10, atol=1e-12)


def test_without_positional_terms_is_multihead_attention_per_column():
    """With r = 0, Eq. 4 is plain (unscaled) multi-head attention; torch's MHA scales by 1/sqrt(d),
    so its query weights are multiplied by sqrt(d) to compensate."""
    b, c, h, w, heads = 1, 8, 5, 2, 2
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    module = runtime.build_module(MECH, {"x": x.shape}, {"heads": heads}, seed=2, dtype=torch.float64)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "rel_" in name:
                p.zero_()
    wqkv = module.height.qkv.weight.detach().clone()
    wqkv[:c] *= (c // heads) ** 0.5
    mha = nn.MultiheadAttention(c, heads, bias=False, batch_first=True).double().eval()
    mha.load_state_dict({"in_proj_weight": wqkv, "out_proj.weight": torch.eye(c, dtype=torch.float64)})
    got = runtime.forward(MECH, module, {"x": x})
    with torch.no_grad():
        for j in range(w):
            seq = x[:, :, :, j].transpose(1, 2)
            _, a = mha(seq, seq, seq, need_weights=True, average_attn_weights=False)
            torch.testing.assert_close(got["height_attention"][:, :, j], a, rtol=1e-10, atol=1e-12)


def test_rows_sum_to_one():
    out = runtime.run(MECH, {"x": torch.randn(2, 16, 5, 6)}, seed=0)
    torch.testing.assert_close(out["height_attention"].sum(-1), torch.ones(2, 8, 6, 5))
    torch.testing.assert_close(out["width_attention"].sum(-1), torch.ones(2, 8, 5, 6))
