"""CoAE against a per-position NumPy transcription of the two non-local directions and the co-excitation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("co-attention-co-excitation")


def emb(sd, name, v):            # 1x1 conv on a [C, N] matrix of position vectors
    return sd[f"{name}.weight"][:, :, 0, 0] @ v + sd[f"{name}.bias"][:, None]


def numpy_coae(x, q, sd, pairwise, squeeze):
    b, c, h, w = x.shape
    _, _, hq, wq = q.shape
    outs, qouts, atts, wgts = [], [], [], []
    for n in range(b):
        xi, pj = x[n].reshape(c, -1), q[n].reshape(c, -1)
        ni, np_ = xi.shape[1], pj.shape[1]
        gi, gp = emb(sd, "g", xi), emb(sd, "g", pj)
        ph, th = emb(sd, "phi", xi), emb(sd, "theta", pj)
        f = np.array([[ph[:, i] @ th[:, j] for j in range(np_)] for i in range(ni)])
        if pairwise == "dot":
            a_t, a_q = f / np_, f.T / ni
        else:
            a_t = np.exp(f - f.max(axis=1, keepdims=True))
            a_t /= a_t.sum(axis=1, keepdims=True)
            a_q = np.exp(f.T - f.T.max(axis=1, keepdims=True))
            a_q /= a_q.sum(axis=1, keepdims=True)
        psi_i = np.stack([sum(a_t[i, j] * gp[:, j] for j in range(np_)) for i in range(ni)], axis=1)
        psi_p = np.stack([sum(a_q[j, i] * gi[:, i] for i in range(ni)) for j in range(np_)], axis=1)
        fi = xi + emb(sd, "w_target", psi_i)
        fp = pj + emb(sd, "w_query", psi_p)

        def mlp(v):
            return sd["fc2.weight"] @ np.maximum(sd["fc1.weight"] @ v + sd["fc1.bias"], 0) + sd["fc2.bias"]
        logit = mlp(fp.mean(axis=1)) + (mlp(fp.max(axis=1)) if squeeze == "avg+max" else 0.0)
        wgt = 1 / (1 + np.exp(-logit))
        outs.append((fi * wgt[:, None]).reshape(c, h, w))
        qouts.append((fp * wgt[:, None]).reshape(c, hq, wq))
        atts.append(a_t)
        wgts.append(wgt)
    return np.stack(outs), np.stack(qouts), np.stack(atts), np.stack(wgts)


@pytest.mark.parametrize("params", [{}, {"pairwise": "embedded_gaussian", "squeeze": "avg+max", "reduction": 4}])
def test_matches_numpy_transcription(params):
    shapes = {"x": (2, 16, 4, 5), "query": (2, 16, 3, 2)}
    resolved = MECH.validate(shapes, params)
    module = runtime.build_module(MECH, shapes, resolved, seed=13, dtype=torch.float64)
    x = torch.randn(*shapes["x"], dtype=torch.float64)
    q = torch.randn(*shapes["query"], dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want = numpy_coae(x.numpy(), q.numpy(), sd, resolved["pairwise"], resolved["squeeze"])
    got = runtime.forward(MECH, module, {"x": x, "query": q})
    for name, w in zip(("output", "query_output", "co_attention", "channel_weights"), want, strict=True):
        np.testing.assert_allclose(got[name].numpy(), w, rtol=1e-10, atol=1e-12)


def test_softmax_rows_sum_to_one_and_shared_weights():
    shapes = {"x": (1, 16, 4, 4), "query": (1, 16, 2, 3)}
    g = torch.Generator().manual_seed(0)
    inputs = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
    out = runtime.run(MECH, inputs, {"pairwise": "embedded_gaussian"}, seed=0)
    torch.testing.assert_close(out["co_attention"].sum(-1), torch.ones(1, 16))
    assert ((out["channel_weights"] > 0) & (out["channel_weights"] < 1)).all()


def test_query_image_changes_target_output_and_batch_mismatch_rejected():
    shapes = {"x": (1, 16, 4, 4), "query": (1, 16, 2, 2)}
    x = torch.randn(*shapes["x"])
    a = runtime.run(MECH, {"x": x, "query": torch.randn(1, 16, 2, 2)}, seed=0)["output"]
    b = runtime.run(MECH, {"x": x, "query": torch.randn(1, 16, 2, 2)}, seed=0)["output"]
    assert not torch.allclose(a, b)
    with pytest.raises(Exception, match="dimension"):
        MECH.validate({"x": (2, 16, 4, 4), "query": (1, 16, 2, 2)})
