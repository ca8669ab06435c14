"""Region attention against a NumPy transcription with explicit per-region loops (argmax regions,
boundary/confidence-weighted pooling, attention between non-empty regions, broadcast back)."""

from __future__ import annotations

import math

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("region-attention")


def numpy_region(x, sd):
    b, c, h, w = x.shape
    s = np.einsum("kc,bchw->bkhw", sd["semantic.weight"][:, :, 0, 0], x) + sd["semantic.bias"][None, :, None, None]
    k = s.shape[1]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    bd = np.zeros((b, h, w))
    for i in range(h):
        for j in range(w):
            bd[:, i, j] = np.einsum("bcuv,cuv->b", xp[:, :, i:i + 3, j:j + 3], sd["boundary.weight"][0])
    bd = 1 / (1 + np.exp(-(bd + sd["boundary.bias"][0])))
    out = x.copy()
    atts, regs = [], []
    for bi in range(b):
        reg = s[bi].argmax(0)
        p = np.exp(s[bi] - s[bi].max(0))
        p /= p.sum(0)
        r = np.zeros((k, c))
        present = np.zeros(k, bool)
        for kk in range(k):
            idx = reg == kk
            if idx.any():
                present[kk] = True
                wts = (1 - bd[bi][idx]) * p[kk][idx]
                r[kk] = (wts[:, None] * x[bi][:, idx].T).sum(0) / wts.sum()
        th = r @ sd["theta.weight"].T + sd["theta.bias"]
        ph = r @ sd["phi.weight"].T + sd["phi.bias"]
        gg = r @ sd["g.weight"].T + sd["g.bias"]
        att = np.zeros((k, k))
        for kk in range(k):
            lg = np.array([th[kk] @ ph[m] / math.sqrt(th.shape[1]) if present[m] else -np.inf for m in range(k)])
            e = np.exp(lg - lg.max())
            att[kk] = e / e.sum()
        r_hat = r + att @ gg
        for i in range(h):
            for j in range(w):
                out[bi, :, i, j] += r_hat[reg[i, j]]
        atts.append(att)
        regs.append(reg)
    return out, np.stack(atts), np.stack(regs)


def test_matches_numpy_equations():
    x = torch.randn(2, 6, 7, 5, dtype=torch.float64)
    p = MECH.validate({"x": x.shape}, {"regions": 4, "key_channels": 3})
    module = runtime.build_module(MECH, {"x": x.shape}, p, seed=2, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, att, reg = numpy_region(x.numpy(), sd)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_array_equal(got["regions"].numpy(), reg)
    np.testing.assert_allclose(got["region_attention"].numpy(), att, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-12)
    assert len(np.unique(reg[0])) > 1


def test_pixels_of_a_region_share_the_context_and_empty_regions_get_no_attention():
    x = torch.randn(1, 8, 6, 6)
    out = runtime.run(MECH, {"x": x}, {"regions": 30}, seed=0)
    delta = (out["output"] - x)[0].flatten(1).T                      # [HW, C]
    reg = out["regions"].flatten()
    for k in reg.unique():
        rows = delta[reg == k]
        torch.testing.assert_close(rows, rows[:1].expand_as(rows))
    present = torch.zeros(30, dtype=torch.bool)
    present[reg.unique()] = True
    att = out["region_attention"][0]
    assert (att[:, ~present] == 0).all()
    torch.testing.assert_close(att.sum(-1), torch.ones(30))
