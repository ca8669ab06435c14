"""A^2 double attention against a per-position NumPy transcription (g_j = sum_i a_i b_ji, z_i = sum_j v_ij g_j)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("double-attention")


def conv1x1(x, w, b):
    return np.einsum("oc,bchw->bohw", w[:, :, 0, 0], x) + b[None, :, None, None]


def numpy_a2(x, sd):
    bsz, c, h, w = x.shape
    a = conv1x1(x, sd["conv_a.weight"], sd["conv_a.bias"]).reshape(bsz, -1, h * w)
    tb = conv1x1(x, sd["conv_b.weight"], sd["conv_b.bias"]).reshape(bsz, -1, h * w)
    tv = conv1x1(x, sd["conv_v.weight"], sd["conv_v.bias"]).reshape(bsz, -1, h * w)
    m, n = a.shape[1], tb.shape[1]
    out = np.zeros_like(x)
    gathers, dists, gs = [], [], []
    for s in range(bsz):
        bmap = np.exp(tb[s] - tb[s].max(axis=1, keepdims=True))
        bmap /= bmap.sum(axis=1, keepdims=True)                   # each of the N maps sums to 1 over HW
        v = np.exp(tv[s] - tv[s].max(axis=0, keepdims=True))
        v /= v.sum(axis=0, keepdims=True)                        # at each position, sums to 1 over N
        g = np.zeros((m, n))
        for j in range(n):                                       # g_j = sum_i a_i * b_j(i)
            for i in range(h * w):
                g[:, j] += a[s][:, i] * bmap[j, i]
        z = np.zeros((m, h * w))
        for i in range(h * w):                                   # z_i = sum_j v_i(j) g_j
            for j in range(n):
                z[:, i] += v[j, i] * g[:, j]
        out[s] = x[s] + conv1x1(z.reshape(1, m, h, w), sd["conv_out.weight"], sd["conv_out.bias"])[0]
        gathers.append(bmap.reshape(n, h, w))
        dists.append(v.reshape(n, h, w))
        gs.append(g)
    return out, np.stack(gathers), np.stack(dists), np.stack(gs)


@pytest.mark.parametrize("params", [{}, {"reduction_m": 2, "reduction_n": 8}])
def test_matches_numpy_equations(params):
    x = torch.randn(2, 16, 5, 4, dtype=torch.float64)
    resolved = MECH.validate({"x": tuple(x.shape)}, params)
    module = runtime.build_module(MECH, {"x": x.shape}, resolved, seed=6, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want = numpy_a2(x.numpy(), sd)
    got = runtime.forward(MECH, module, {"x": x})
    for name, w in zip(("output", "gather_maps", "distribute_weights", "global_descriptors"), want, strict=True):
        np.testing.assert_allclose(got[name].numpy(), w, rtol=1e-11, atol=1e-12)


def test_attention_normalisations():
    out = runtime.run(MECH, {"x": torch.randn(2, 16, 6, 3)}, seed=1)
    torch.testing.assert_close(out["gather_maps"].sum(dim=(2, 3)), torch.ones(2, 4))
    torch.testing.assert_close(out["distribute_weights"].sum(dim=1), torch.ones(2, 6, 3))
