"""Repulsive attention: attention against torch.nn.MultiheadAttention, the SVGD repulsive term against
autograd of the RBF kernel, and the update against a loop transcription."""

from __future__ import annotations

import math

import torch

from service.mechanisms import registry, runtime
from service.mechanisms.repulsive_attention import repulsion

MECH = registry.get("repulsive-attention")


def test_step_zero_conforms_to_torch_multiheadattention():
    d, h = 16, 4
    module = runtime.build_module(MECH, {"x": (2, 5, d)}, MECH.resolve_params({"heads": h}), seed=1)
    theirs = torch.nn.MultiheadAttention(d, h, batch_first=True)
    theirs.load_state_dict({
        "in_proj_weight": torch.cat([module.q.weight, module.k.weight, module.v.weight]),
        "in_proj_bias": torch.cat([module.q.bias, module.k.bias, module.v.bias]),
        "out_proj.weight": module.o.weight, "out_proj.bias": module.o.bias})
    x = torch.randn(2, 5, d)
    got = runtime.forward(MECH, module, {"x": x})
    with torch.no_grad():
        want, w = theirs(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(got["output"], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["attention"], w, rtol=1e-5, atol=1e-6)


def test_repulsive_force_is_svgd_kernel_gradient():
    heads = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    kern, force = repulsion(heads)
    flat = heads.reshape(2, 5, -1)
    for b in range(2):
        d2 = torch.cdist(flat[b], flat[b]) ** 2
        med = d2[~torch.eye(5, dtype=torch.bool)].median()
        bw = med / math.log(6)
        for i in range(5):
            total = torch.zeros(12, dtype=torch.float64)
            for j in range(5):
                pj = flat[b, j].clone().requires_grad_(True)
                kij = torch.exp(-((pj - flat[b, i]) ** 2).sum() / bw)
                (grad,) = torch.autograd.grad(kij, pj)       # grad_{O_j} k(O_j, O_i)
                total += grad
                torch.testing.assert_close(kern[b, j, i], kij.detach())
            torch.testing.assert_close(force[b, i].reshape(-1), total / 5)


def test_step_moves_heads_along_force_and_heads_spread_out():
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    p0, p1 = (MECH.resolve_params({"heads": 4, "step": s}) for s in (0.0, 0.5))
    m0 = runtime.build_module(MECH, {"x": x.shape}, p0, seed=2, dtype=torch.float64)
    m1 = runtime.build_module(MECH, {"x": x.shape}, p1, seed=2, dtype=torch.float64)
    a, b = runtime.forward(MECH, m0, {"x": x}), runtime.forward(MECH, m1, {"x": x})
    moved = b["output"] - a["output"]
    force = b["repulsive_force"].transpose(1, 2).reshape(1, 6, 16)
    torch.testing.assert_close(moved, 0.5 * force @ m0.o.weight.T)
    # the repulsive step increases the mean pairwise distance between heads
    q, k, v = (m0.q(x), m0.k(x), m0.v(x))
    heads = torch.softmax(q.reshape(1, 6, 4, 4).transpose(1, 2) @ k.reshape(1, 6, 4, 4).permute(0, 2, 3, 1) / 2, -1) \
        @ v.reshape(1, 6, 4, 4).transpose(1, 2)
    after = heads + 0.05 * repulsion(heads)[1]
    spread = lambda t: torch.pdist(t.reshape(4, -1)).mean()  # noqa: E731
    assert spread(after[0]) > spread(heads[0])
