"""Criss-cross attention against a dense NumPy transcription of CCNet (Huang et al., ICCV 2019):
full H*W x H*W affinities restricted by an explicit criss-cross mask, Eq. 2, applied R times."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("criss-cross-attention")


def conv1x1(x, w, b):
    return np.einsum("oc,bchw->bohw", w[:, :, 0, 0], x) + b[None, :, None, None]


def numpy_cca(x, sd):
    b, c, h, w = x.shape
    q = conv1x1(x, sd["query.weight"], sd["query.bias"]).reshape(b, -1, h * w)
    k = conv1x1(x, sd["key.weight"], sd["key.bias"]).reshape(b, -1, h * w)
    v = conv1x1(x, sd["value.weight"], sd["value.bias"]).reshape(b, c, h * w)
    out = x.reshape(b, c, h * w).copy()
    maps = np.zeros((b, h, w, h + w - 1))
    for u in range(h * w):
        uh, uw = divmod(u, w)
        # criss-cross path of u: its column without u (top to bottom), then its row (left to right)
        path = [g * w + uw for g in range(h) if g != uh] + [uh * w + t for t in range(w)]
        d = np.einsum("bc,bcp->bp", q[:, :, u], k[:, :, path])
        a = np.exp(d - d.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        out[:, :, u] += np.einsum("bp,bcp->bc", a, v[:, :, path])   # Eq. 2
        maps[:, uh, uw] = a
    return out.reshape(b, c, h, w), maps


@pytest.mark.parametrize("shape,recurrence", [((2, 16, 5, 4), 2), ((1, 8, 3, 6), 1), ((1, 8, 1, 4), 3)])
def test_matches_dense_numpy_transcription(shape, recurrence):
    x = torch.randn(*shape, dtype=torch.float64)
    params = MECH.resolve_params({"reduction": 4, "recurrence": recurrence})
    module = runtime.build_module(MECH, {"x": shape}, params, seed=2, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    got = runtime.forward(MECH, module, {"x": x})
    cur = x.numpy()
    for r in range(recurrence):                                      # RCCA: same weights each loop
        cur, maps = numpy_cca(cur, sd)
        np.testing.assert_allclose(got["attention"][:, r].numpy(), maps, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), cur, rtol=1e-10, atol=1e-10)


def test_attention_rows_sum_to_one_and_path_length():
    x = torch.randn(2, 16, 6, 5)
    out = runtime.run(MECH, {"x": x}, seed=0)
    assert out["attention"].shape == (2, 2, 6, 5, 6 + 5 - 1)
    torch.testing.assert_close(out["attention"].sum(-1), torch.ones(2, 2, 6, 5))
    assert (out["attention"] > 0).all()


def test_one_pass_reaches_only_the_cross_two_passes_reach_everything():
    """Perturbing one pixel changes only its row and column after one pass, the whole map after two."""
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64)
    x2 = x.clone()
    x2[0, :, 1, 2] += 1.0
    for r, expect_all in ((1, False), (2, True)):
        module = runtime.build_module(MECH, {"x": x.shape}, {"reduction": 4, "recurrence": r}, seed=0,
                                      dtype=torch.float64)
        diff = (runtime.forward(MECH, module, {"x": x})["output"]
                - runtime.forward(MECH, module, {"x": x2})["output"]).abs().sum(1)[0]
        changed = diff > 1e-12
        if expect_all:
            assert changed.all()
        else:
            cross = torch.zeros(5, 6, dtype=torch.bool)
            cross[1, :] = True
            cross[:, 2] = True
            assert torch.equal(changed, cross)
