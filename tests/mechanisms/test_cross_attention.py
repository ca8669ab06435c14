"""Cross Attention Module (Hou et al., NeurIPS 2019) against a loop-based NumPy transcription of
Eqs. 1-3, plus the symmetry the shared meta-learner implies."""

from __future__ import annotations

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("cross-attention")


def numpy_cam(q_feat, p_feat, w1, w2, tau):
    b, c, h, w = q_feat.shape
    m = h * w
    out_q, out_p = np.zeros_like(q_feat), np.zeros_like(p_feat)
    maps_q, maps_p = np.zeros((b, h, w)), np.zeros((b, h, w))
    for n in range(b):
        p = p_feat[n].reshape(c, m)
        q = q_feat[n].reshape(c, m)
        r = np.zeros((m, m))
        for i in range(m):
            for j in range(m):
                r[i, j] = p[:, i] @ q[:, j] / (np.linalg.norm(p[:, i]) * np.linalg.norm(q[:, j]))  # Eq. 1
        for rr, maps, out, feat in ((r, maps_p, out_p, p_feat), (r.T, maps_q, out_q, q_feat)):
            gap = rr.mean(axis=0)                                       # GAP of each correlation map
            kernel = w2 @ np.maximum(w1 @ gap, 0.0)                     # Eq. 2
            s = np.array([kernel @ rr[i] for i in range(m)]) / tau      # w^T r_i
            a = np.exp(s - s.max())
            a /= a.sum()                                                # Eq. 3
            maps[n] = a.reshape(h, w)
            out[n] = feat[n] * (1 + maps[n])
    return out_q, out_p, maps_q, maps_p


def test_matches_numpy_equations():
    q = torch.randn(2, 8, 4, 3, dtype=torch.float64)
    p = torch.randn(2, 8, 4, 3, dtype=torch.float64)
    params = MECH.resolve_params({"reduction": 3, "temperature": 0.1})
    module = runtime.build_module(MECH, {"query": q.shape, "support": p.shape}, params, seed=5, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    oq, op, aq, ap = numpy_cam(q.numpy(), p.numpy(), sd["w1.weight"], sd["w2.weight"], 0.1)
    got = runtime.forward(MECH, module, {"query": q, "support": p})
    np.testing.assert_allclose(got["query_attention"].numpy(), aq, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got["support_attention"].numpy(), ap, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got["output"].numpy(), oq, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["support_output"].numpy(), op, rtol=1e-10, atol=1e-12)


def test_maps_sum_to_one_and_swapping_inputs_swaps_outputs():
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(2, 16, 6, 6, generator=g), torch.randn(2, 16, 6, 6, generator=g)
    module = runtime.build_module(MECH, {"query": q.shape, "support": p.shape}, MECH.defaults(), seed=1)
    a = runtime.forward(MECH, module, {"query": q, "support": p})
    b = runtime.forward(MECH, module, {"query": p, "support": q})
    torch.testing.assert_close(a["query_attention"].sum((1, 2)), torch.ones(2))
    torch.testing.assert_close(a["query_attention"], b["support_attention"])
    torch.testing.assert_close(a["output"], b["support_output"])


def test_invariant_to_feature_scale():
    """Cosine correlations make the attention maps independent of each position's feature norm."""
    g = torch.Generator().manual_seed(2)
    q, p = torch.randn(1, 8, 3, 4, generator=g), torch.randn(1, 8, 3, 4, generator=g)
    scale = torch.rand(1, 1, 3, 4, generator=g) + 0.5
    module = runtime.build_module(MECH, {"query": q.shape, "support": p.shape}, MECH.defaults(), seed=1)
    a = runtime.forward(MECH, module, {"query": q, "support": p})
    b = runtime.forward(MECH, module, {"query": q * scale, "support": p * 3.0})
    torch.testing.assert_close(a["query_attention"], b["query_attention"])
