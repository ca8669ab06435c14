"""X-Linear attention (Pan et al., CVPR 2020) against a NumPy transcription of Eqs. 3-7, looping over
the N key/value positions, plus the properties the equations give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("x-linear-attention")


def lin(sd, name, x):
    return sd[name + ".weight"] @ x + sd[name + ".bias"]


def numpy_xlinear(q, k, v, sd, act):
    b, n, _ = k.shape
    outs, ss, cs = [], [], []
    for bb in range(b):
        qk, qv = act(lin(sd, "w_qk", q[bb])), act(lin(sd, "w_qv", q[bb]))
        bk2 = [act(lin(sd, "w_bk", act(lin(sd, "w_k", k[bb, i])) * qk)) for i in range(n)]   # Eqs. 3-4
        logits = np.array([lin(sd, "w_b", t)[0] for t in bk2])
        beta_s = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        beta_c = 1 / (1 + np.exp(-lin(sd, "w_e", np.mean(bk2, axis=0))))                      # Eq. 5
        acc = sum(beta_s[i] * act(lin(sd, "w_v", v[bb, i])) * qv for i in range(n))           # Eq. 6
        outs.append(beta_c * acc)
        ss.append(beta_s)
        cs.append(beta_c)
    return np.array(outs), np.array(ss), np.array(cs)


ACTS = {"relu": lambda t: np.maximum(t, 0.0), "elu": lambda t: np.where(t > 0, t, np.expm1(t))}


@pytest.mark.parametrize("activation", ["relu", "elu"])
def test_matches_numpy_equations(activation):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 6, generator=g, dtype=torch.float64)
    k = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    v = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    shapes = {"query": q.shape, "keys": k.shape, "values": v.shape}
    params = MECH.resolve_params({"embed_dim": 8, "mid_dim": 6, "activation": activation})
    module = runtime.build_module(MECH, shapes, params, seed=2, dtype=torch.float64)
    sd = {name: t.numpy() for name, t in module.state_dict().items()}
    want, beta_s, beta_c = numpy_xlinear(q.numpy(), k.numpy(), v.numpy(), sd, ACTS[activation])
    got = runtime.forward(MECH, module, {"query": q, "keys": k, "values": v})
    np.testing.assert_allclose(got["spatial_attention"].numpy(), beta_s, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got["channel_attention"].numpy(), beta_c, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-12, atol=1e-14)


def test_properties_permutation_and_ranges():
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, 12, generator=g), torch.randn(3, 9, 10, generator=g), torch.randn(3, 9, 8, generator=g)
    module = runtime.build_module(MECH, {"query": q.shape, "keys": k.shape, "values": v.shape}, MECH.defaults(),
                                  seed=3)
    a = runtime.forward(MECH, module, {"query": q, "keys": k, "values": v})
    perm = torch.randperm(9, generator=g)
    b = runtime.forward(MECH, module, {"query": q, "keys": k[:, perm], "values": v[:, perm]})
    torch.testing.assert_close(a["output"], b["output"])                   # a set operation over (k_i, v_i)
    torch.testing.assert_close(a["spatial_attention"][:, perm], b["spatial_attention"])
    torch.testing.assert_close(a["spatial_attention"].sum(-1), torch.ones(3))
    assert ((a["channel_attention"] > 0) & (a["channel_attention"] < 1)).all()
