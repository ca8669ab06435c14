"""EMA unit against a NumPy transcription of Li et al. (ICCV 2019) E-step / M-step with explicit loops."""

from __future__ import annotations

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("expectation-maximization-attention")


def numpy_emau(x, sd, iterations, lam):
    b, c, h, w = x.shape
    n = h * w
    out = np.empty_like(x)
    resp = np.empty((b, sd["mu"].shape[2], n))
    bases = np.empty((b, c, sd["mu"].shape[2]))
    wi, bi = sd["conv_in.weight"][:, :, 0, 0], sd["conv_in.bias"]
    wo = sd["conv_out.weight"][:, :, 0, 0]
    scale = sd["bn.weight"] / np.sqrt(sd["bn.running_var"] + 1e-5)
    for s in range(b):
        feats = np.stack([wi @ x[s, :, i, j] + bi for i in range(h) for j in range(w)])   # [N, C]
        mu = sd["mu"][0].T.copy()                                                          # [K, C]
        for _ in range(iterations):
            logits = lam * feats @ mu.T                                                    # [N, K]
            z = np.exp(logits - logits.max(1, keepdims=True))
            z /= z.sum(1, keepdims=True)
            for k in range(mu.shape[0]):
                m = (z[:, k:k + 1] * feats).sum(0) / (1e-6 + z[:, k].sum())
                mu[k] = m / max(np.linalg.norm(m), 1e-12)
        recon = z @ mu                                                                     # [N, C]
        y = np.maximum(recon, 0) @ wo.T
        y = (y - sd["bn.running_mean"]) * scale + sd["bn.bias"]
        out[s] = np.maximum(x[s] + y.T.reshape(c, h, w), 0)
        resp[s] = z.T
        bases[s] = mu.T
    return out, resp.reshape(b, -1, h, w), bases


def test_matches_numpy_em_loops():
    x = torch.randn(2, 12, 5, 4, dtype=torch.float64)
    params = {"bases": 6, "iterations": 3, "temperature": 1.5}
    module = runtime.build_module(MECH, {"x": x.shape}, params, seed=3, dtype=torch.float64)
    with torch.no_grad():  # non-trivial BN statistics so the BN step is exercised
        module.bn.running_mean.uniform_(-0.5, 0.5)
        module.bn.running_var.uniform_(0.5, 2.0)
        module.bn.weight.uniform_(0.5, 1.5)
        module.bn.bias.uniform_(-0.2, 0.2)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want_out, want_z, want_mu = numpy_emau(x.numpy(), sd, 3, 1.5)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["output"].numpy(), want_out, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["responsibilities"].numpy(), want_z, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["bases"].numpy(), want_mu, rtol=1e-10, atol=1e-10)


def test_responsibilities_are_distributions_and_bases_unit_norm():
    x = torch.randn(2, 16, 6, 6)
    out = runtime.run(MECH, {"x": x}, {"bases": 8}, seed=0)
    torch.testing.assert_close(out["responsibilities"].sum(1), torch.ones(2, 6, 6))
    torch.testing.assert_close(out["bases"].norm(dim=1), torch.ones(2, 8))
    assert (out["output"] >= 0).all()


def test_one_iteration_differs_from_three():
    x = torch.randn(1, 8, 4, 4)
    a = runtime.run(MECH, {"x": x}, {"iterations": 1, "bases": 4}, seed=2)
    b = runtime.run(MECH, {"x": x}, {"iterations": 3, "bases": 4}, seed=2)
    assert not torch.allclose(a["bases"], b["bases"])
