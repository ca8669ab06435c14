"""Non-local block against a NumPy transcription of Wang et al. Eqs. 1-6 and against timm's NonLocalAttn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime
from service.mechanisms.base import MechanismInputError

MECH = registry.get("non-local")


def conv1x1(x, w, b):
    """x [B, C, H, W], w [O, C, 1, 1] -> [B, O, H, W] by explicit channel sums."""
    return np.einsum("oc,bchw->bohw", w[:, :, 0, 0], x) + b[None, :, None, None]


def maxpool2(x):
    b, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2)
    return x.max(axis=(3, 5))


def numpy_non_local(x, sd, pairwise, subsample):
    b, c, h, w = x.shape
    pool = maxpool2 if subsample else (lambda t: t)
    g = pool(conv1x1(x, sd["g.weight"], sd["g.bias"]))
    if pairwise == "gaussian":
        th, ph = x, pool(x)
    else:
        th = conv1x1(x, sd["theta.weight"], sd["theta.bias"])
        ph = pool(conv1x1(x, sd["phi.weight"], sd["phi.bias"]))
    th = th.reshape(b, th.shape[1], -1)            # [B, C', N]
    ph = ph.reshape(b, ph.shape[1], -1)            # [B, C', M]
    g = g.reshape(b, g.shape[1], -1)               # [B, C', M]
    n, m = th.shape[2], ph.shape[2]
    f = np.zeros((b, n, m))
    for i in range(n):                             # pairwise f(x_i, x_j), one query position at a time
        for j in range(m):
            if pairwise in ("gaussian", "embedded_gaussian"):
                f[:, i, j] = np.exp(np.sum(th[:, :, i] * ph[:, :, j], axis=1))
            elif pairwise == "dot_product":
                f[:, i, j] = np.sum(th[:, :, i] * ph[:, :, j], axis=1)
            else:
                cat = np.concatenate([th[:, :, i], ph[:, :, j]], axis=1)
                f[:, i, j] = np.maximum(cat @ sd["w_f.weight"][0], 0.0)
    norm = f.sum(axis=2, keepdims=True) if pairwise in ("gaussian", "embedded_gaussian") else m
    a = f / norm
    y = np.einsum("bnm,bcm->bcn", a, g).reshape(b, -1, h, w)        # Eq. 1
    z = conv1x1(y, sd["w_z.weight"], sd["w_z.bias"]) + x              # Eq. 6
    return z, a


@pytest.mark.parametrize("pairwise,subsample", [
    ("embedded_gaussian", False), ("embedded_gaussian", True), ("gaussian", False),
    ("dot_product", True), ("concatenation", False)])
def test_matches_numpy_equations(pairwise, subsample):
    x = torch.randn(2, 8, 5, 4, dtype=torch.float64) * 0.5
    params = MECH.resolve_params({"pairwise": pairwise, "subsample": subsample})
    module = runtime.build_module(MECH, {"x": x.shape}, params, seed=3, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want_z, want_a = numpy_non_local(x.numpy(), sd, pairwise, subsample)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["attention"].numpy(), want_a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), want_z, rtol=1e-10, atol=1e-12)
    fused = runtime.forward(MECH, module, {"x": x}, need_weights=False)
    np.testing.assert_allclose(fused["output"].numpy(), want_z, rtol=1e-10, atol=1e-12)


def test_softmax_rows_sum_to_one_and_shapes():
    x = torch.randn(2, 16, 6, 5)
    out = runtime.run(MECH, {"x": x}, seed=0)
    assert out["attention"].shape == (2, 30, 30)
    torch.testing.assert_close(out["attention"].sum(-1), torch.ones(2, 30))
    out = runtime.run(MECH, {"x": x}, {"subsample": True}, seed=0)
    assert out["attention"].shape == (2, 30, 6)


def test_equivariant_to_spatial_permutation_without_subsampling():
    """Non-local ops have no positional terms: permuting positions permutes the output."""
    x = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    module = runtime.build_module(MECH, {"x": x.shape}, MECH.defaults(), seed=1, dtype=torch.float64)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    xp = x.flatten(2)[:, :, perm].reshape_as(x)
    a = runtime.forward(MECH, module, {"x": x})["output"].flatten(2)[:, :, perm]
    b = runtime.forward(MECH, module, {"x": xp})["output"].flatten(2)
    torch.testing.assert_close(a, b)


def test_rejects_subsampling_a_single_row():
    with pytest.raises(MechanismInputError, match="subsample"):
        MECH.validate({"x": (1, 8, 1, 5)}, {"subsample": True})


def test_conforms_to_timm_non_local_attn(timm_layers):
    c = 32
    ours = runtime.build_module(MECH, {"x": (2, c, 7, 6)}, MECH.defaults(), seed=4)
    theirs = timm_layers.NonLocalAttn(c, use_scale=False, rd_channels=c // 2).eval()
    sd = ours.state_dict()
    bn = theirs.norm
    theirs.load_state_dict({
        "t.weight": sd["theta.weight"], "t.bias": sd["theta.bias"],
        "p.weight": sd["phi.weight"], "p.bias": sd["phi.bias"],
        "g.weight": sd["g.weight"], "g.bias": sd["g.bias"],
        "z.weight": sd["w_z.weight"], "z.bias": sd["w_z.bias"],
        # BatchNorm at identity statistics: (v - 0) / sqrt((1 - eps) + eps) * 1 + 0 = v
        "norm.weight": torch.ones(c), "norm.bias": torch.zeros(c),
        "norm.running_mean": torch.zeros(c), "norm.running_var": torch.full((c,), 1.0 - bn.eps),
        "norm.num_batches_tracked": torch.tensor(0),
    })
    x = torch.randn(2, c, 7, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["output"], theirs(x), rtol=1e-5, atol=1e-5)
