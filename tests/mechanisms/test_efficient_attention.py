"""Efficient attention against a NumPy computation in the other association order: the implicit n x n
attention matrix rho_q(Q) rho_k(K)^T is formed first and then applied to V (Shen et al. show both orders
are equal), with the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime
from service.mechanisms.base import MechanismInputError

MECH = registry.get("efficient-attention")


def _softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def numpy_efficient(x, sd, heads):
    b, c, h, w = x.shape
    n = h * w
    xs = x.reshape(b, c, n).transpose(0, 2, 1)                                   # [B, n, C] rows = positions

    def proj(name):
        return xs @ sd[f"{name}.weight"][:, :, 0, 0].T + sd[f"{name}.bias"]        # [B, n, d]

    q, k, v = proj("queries"), proj("keys"), proj("values")
    dk, dv = q.shape[-1] // heads, v.shape[-1] // heads
    out = np.zeros((b, n, v.shape[-1]))
    implicit = np.zeros((b, heads, n, n))
    for m in range(heads):
        qm = _softmax(q[..., m * dk:(m + 1) * dk], axis=2)       # each row of Q over its features
        km = _softmax(k[..., m * dk:(m + 1) * dk], axis=1)       # each column of K over positions
        a = np.einsum("bic,bjc->bij", qm, km)                    # rho_q(Q) rho_k(K)^T  [B, n, n]
        implicit[:, m] = a
        out[..., m * dv:(m + 1) * dv] = a @ v[..., m * dv:(m + 1) * dv]
    y = out @ sd["reprojection.weight"][:, :, 0, 0].T + sd["reprojection.bias"]
    return y.transpose(0, 2, 1).reshape(b, c, h, w) + x, implicit


@pytest.mark.parametrize("params", [{"heads": 1}, {"key_channels": 6, "value_channels": 9, "heads": 3}])
def test_matches_numpy_in_dot_product_order(params):
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    p = MECH.validate({"x": x.shape}, params)
    module = runtime.build_module(MECH, {"x": x.shape}, p, seed=8, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, implicit = numpy_efficient(x.numpy(), sd, p["heads"])
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-12)
    # the implicit attention matrix is row-stochastic, as for dot-product attention
    np.testing.assert_allclose(implicit.sum(-1), 1.0, rtol=1e-12)
    # and it is rebuilt exactly from the two published normalised maps
    qw = got["query_weights"].flatten(3).numpy()
    ka = got["key_attention"].flatten(3).numpy()
    np.testing.assert_allclose(np.einsum("bhci,bhcj->bhij", qw, ka), implicit, rtol=1e-10, atol=1e-14)


def test_normalisations():
    out = runtime.run(MECH, {"x": torch.randn(2, 8, 5, 5)}, {"heads": 2}, seed=0)
    torch.testing.assert_close(out["key_attention"].sum((-2, -1)), torch.ones(2, 2, 4))
    torch.testing.assert_close(out["query_weights"].sum(2), torch.ones(2, 2, 5, 5))


def test_benchmark_input_and_constraints():
    out = runtime.run(MECH, {"x": torch.randn(8, 256, 28, 28)}, {"heads": 8}, seed=0)
    assert out["context"].shape == (8, 8, 32, 32)
    with pytest.raises(MechanismInputError, match="divisible"):
        MECH.validate({"x": (1, 10, 4, 4)}, {"heads": 4})
