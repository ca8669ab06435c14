"""Reciprocal Attention Fusion against a NumPy transcription (explicit Tucker core contractions,
loops over grid cells and objects), plus permutation/normalisation properties."""

from __future__ import annotations

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("reciprocal-attention")


def tucker(sd, name, x, y):
    xt = np.tanh(sd[f"{name}.proj_x.weight"] @ x + sd[f"{name}.proj_x.bias"])
    yt = np.tanh(sd[f"{name}.proj_y.weight"] @ y + sd[f"{name}.proj_y.bias"])
    core = sd[f"{name}.core"]
    return np.array([xt @ core[:, :, k] @ yt for k in range(core.shape[2])])


def softmax(s):
    e = np.exp(s - s.max())
    return e / e.sum()


def numpy_raf(q, grid, objs, sd):
    b, c, h, w = grid.shape
    res = []
    for n in range(b):
        cells = grid[n].reshape(c, h * w).T
        alpha = softmax(np.array([sd["score_grid.weight"][0] @ tucker(sd, "fuse_grid", q[n], g)
                                  for g in cells]) + sd["score_grid.bias"][0])
        beta = softmax(np.array([sd["score_obj.weight"][0] @ tucker(sd, "fuse_obj", q[n], o)
                                 for o in objs[n]]) + sd["score_obj.bias"][0])
        g_hat, o_hat = alpha @ cells, beta @ objs[n]
        z = tucker(sd, "fuse_final", q[n], np.concatenate([g_hat, o_hat]))
        res.append((softmax(sd["classifier.weight"] @ z + sd["classifier.bias"]), alpha.reshape(h, w), beta))
    return [np.array(t) for t in zip(*res, strict=True)]


def test_matches_numpy_transcription():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 5, generator=g, dtype=torch.float64)
    grid = torch.randn(2, 4, 3, 2, generator=g, dtype=torch.float64)
    objs = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    shapes = {"question": q.shape, "grid": grid.shape, "objects": objs.shape}
    params = MECH.resolve_params({"fusion_dim": 6, "out_dim": 5, "num_answers": 7})
    module = runtime.build_module(MECH, shapes, params, seed=1, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    ans, alpha, beta = numpy_raf(q.numpy(), grid.numpy(), objs.numpy(), sd)
    got = runtime.forward(MECH, module, {"question": q, "grid": grid, "objects": objs})
    np.testing.assert_allclose(got["grid_attention"].numpy(), alpha, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(got["object_attention"].numpy(), beta, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(got["output"].numpy(), ans, rtol=1e-11, atol=1e-14)


def test_object_order_does_not_matter_and_distributions_normalise():
    g = torch.Generator().manual_seed(1)
    q, grid = torch.randn(3, 12, generator=g), torch.randn(3, 8, 4, 4, generator=g)
    objs = torch.randn(3, 6, 10, generator=g)
    shapes = {"question": q.shape, "grid": grid.shape, "objects": objs.shape}
    module = runtime.build_module(MECH, shapes, MECH.defaults(), seed=2)
    a = runtime.forward(MECH, module, {"question": q, "grid": grid, "objects": objs})
    perm = torch.randperm(6, generator=g)
    b = runtime.forward(MECH, module, {"question": q, "grid": grid, "objects": objs[:, perm]})
    torch.testing.assert_close(a["output"], b["output"])
    torch.testing.assert_close(a["object_attention"][:, perm], b["object_attention"])
    torch.testing.assert_close(a["output"].sum(-1), torch.ones(3))
    torch.testing.assert_close(a["grid_attention"].sum((1, 2)), torch.ones(3))
