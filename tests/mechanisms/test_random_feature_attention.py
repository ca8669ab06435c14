"""RFA (Peng et al., ICLR 2021) against a NumPy transcription in quadratic form (explicit feature
maps, implied attention matrix, explicit products of gates), and against exact softmax attention
as the number of random features grows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime
from service.mechanisms.base import MechanismInputError

MECH = registry.get("random-feature-attention")


def phi(x, u, sigma):
    """x [N, d], u [D, d] -> [N, 2D], Eq. 3 term by term."""
    n, dd = x.shape[0], u.shape[0]
    out = np.zeros((n, 2 * dd))
    for i in range(dd):
        w = sigma * u[i]
        out[:, i] = np.sin(x @ w)
        out[:, dd + i] = np.cos(x @ w)
    return out / np.sqrt(dd)


def numpy_rfa(x, sd, heads, sigma, causal, gated):
    b, n, e = x.shape
    d = e // heads
    qkv = x @ sd["qkv.weight"].T + sd["qkv.bias"]
    out = np.zeros((b, n, e))
    att = np.zeros((b, heads, n, n))
    gates = 1 / (1 + np.exp(-(x @ sd["gate.weight"].T + sd["gate.bias"]))) if gated else None
    for bb in range(b):
        for h in range(heads):
            q, k, v = (qkv[bb, :, j * e + h * d: j * e + (h + 1) * d] for j in range(3))
            q = q / np.linalg.norm(q, axis=1, keepdims=True)
            k = k / np.linalg.norm(k, axis=1, keepdims=True)
            u = sd["random_directions"][h]
            w = phi(q, u, sigma) @ phi(k, u, sigma).T                    # phi(q_t) . phi(k_i)
            if causal:
                coef = np.tril(np.ones((n, n)))
                if gated:
                    g = gates[bb, :, h]
                    for t in range(n):
                        for i in range(t + 1):
                            coef[t, i] = (1 - g[i]) * np.prod(g[i + 1: t + 1])
                w = w * coef
            a = w / w.sum(axis=1, keepdims=True)
            att[bb, h] = a
            out[bb, :, h * d:(h + 1) * d] = a @ v
    return out @ sd["proj.weight"].T + sd["proj.bias"], att, gates


@pytest.mark.parametrize("causal,gated", [(False, False), (True, False), (True, True)])
def test_matches_numpy_quadratic_form(causal, gated):
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    params = MECH.resolve_params({"heads": 2, "num_features": 16, "sigma": 0.8, "causal": causal, "gated": gated})
    module = runtime.build_module(MECH, {"x": x.shape}, params, seed=3, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, att, gates = numpy_rfa(x.numpy(), sd, 2, 0.8, causal, gated)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["attention"].numpy(), att, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-9, atol=1e-11)
    if gated:
        np.testing.assert_allclose(got["gates"].numpy(), gates.transpose(0, 2, 1), rtol=1e-12)
    fast = runtime.forward(MECH, module, {"x": x}, need_weights=False)
    assert set(fast) <= {"output", "gates"}
    np.testing.assert_allclose(fast["output"].numpy(), want, rtol=1e-9, atol=1e-11)


def test_approaches_softmax_attention_with_many_features():
    """E[phi(q).phi(k)] = exp(-sigma^2 |q-k|^2 / 2) ~ exp(sigma^2 q.k) for unit q, k."""
    x = torch.randn(1, 10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # fixed input
    params = MECH.resolve_params({"heads": 1, "num_features": 16384, "sigma": 1.5})
    module = runtime.build_module(MECH, {"x": x.shape}, params, seed=0, dtype=torch.float64)
    q, k, _ = module.qkv(x).detach().chunk(3, dim=-1)
    q, k = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
    exact = torch.softmax(1.5 ** 2 * q @ k.transpose(-1, -2), dim=-1)
    got = runtime.forward(MECH, module, {"x": x})["attention"][:, 0]
    torch.testing.assert_close(got, exact, rtol=0, atol=0.02)
    assert (got - exact).abs().max() > 1e-6                      # an estimate, not the exact softmax


def test_causal_output_ignores_the_future_and_gated_needs_causal():
    x = torch.randn(1, 6, 8)
    module = runtime.build_module(MECH, {"x": x.shape}, {"heads": 2, "num_features": 16, "sigma": 1.0,
                                                         "causal": True, "gated": True}, seed=1)
    x2 = x.clone()
    x2[:, 4:] += 1.0
    a, b = runtime.forward(MECH, module, {"x": x}), runtime.forward(MECH, module, {"x": x2})
    torch.testing.assert_close(a["output"][:, :4], b["output"][:, :4])
    assert torch.equal(a["attention"][0, :, :4, 4:], torch.zeros(2, 4, 2))
    with pytest.raises(MechanismInputError, match="gated"):
        MECH.validate({"x": (1, 6, 8)}, {"gated": True})
