"""UA attention against a NumPy transcription with replayed Gaussian noise (Heo et al. NeurIPS 2018, Sec. 3)."""

from __future__ import annotations

import math

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("uncertainty-aware-attention")


def test_matches_numpy_with_replayed_noise():
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    module = runtime.build_module(MECH, {"x": x.shape}, MECH.resolve_params({"dim": 5}), seed=2,
                                  dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    got = runtime.forward(MECH, module, {"x": x}, seed=4)
    g = torch.Generator().manual_seed(4)
    eps_a = torch.randn(2, 4, generator=g, dtype=torch.float64).numpy()
    eps_b = torch.randn(2, 4, 5, generator=g, dtype=torch.float64).numpy()
    for b in range(2):
        v = np.stack([sd["embed.weight"] @ x[b, j].numpy() for j in range(4)])
        a = np.zeros(4)
        c = np.zeros(5)
        betas, logp = [], np.zeros(4)
        for j in range(4):
            mu_a = sd["mu_a.weight"][0] @ v[j] + sd["mu_a.bias"][0]
            s_a = math.exp(sd["log_sigma_a.weight"][0] @ v[j] + sd["log_sigma_a.bias"][0])
            mu_b = sd["mu_b.weight"] @ v[j] + sd["mu_b.bias"]
            s_b = np.exp(sd["log_sigma_b.weight"] @ v[j] + sd["log_sigma_b.bias"])
            a[j] = mu_a + s_a * eps_a[b, j]
            bj = mu_b + s_b * eps_b[b, j]
            betas.append(np.tanh(bj))
            logp[j] = (-0.5 * eps_a[b, j] ** 2 - math.log(s_a * math.sqrt(2 * math.pi))
                       + np.sum(-0.5 * eps_b[b, j] ** 2 - np.log(s_b * math.sqrt(2 * math.pi))))
        alpha = np.exp(a - a.max())
        alpha /= alpha.sum()
        for j in range(4):
            c += alpha[j] * betas[j] * v[j]
        np.testing.assert_allclose(got["output"][b].numpy(), c, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got["alpha"][b].numpy(), alpha, rtol=1e-10)
        np.testing.assert_allclose(got["beta"][b].numpy(), np.stack(betas), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got["log_prob"][b].numpy(), logp, rtol=1e-10)


def test_deterministic_mode_uses_means_and_sampling_is_seeded():
    x = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0))
    mdet = runtime.build_module(MECH, {"x": x.shape}, MECH.resolve_params({"training": False}), seed=0)
    det, det2 = runtime.forward(MECH, mdet, {"x": x}, seed=0), runtime.forward(MECH, mdet, {"x": x}, seed=1)
    assert torch.equal(det["output"], det2["output"])
    m = runtime.build_module(MECH, {"x": x.shape}, MECH.defaults(), seed=0)
    a, b, c = (runtime.forward(MECH, m, {"x": x}, seed=s) for s in (5, 5, 6))
    mean_alpha = torch.softmax(m.mu_a(m.embed(x)).squeeze(-1), 1)
    torch.testing.assert_close(det["alpha"], mean_alpha)
    assert torch.equal(a["output"], b["output"]) and not torch.equal(a["output"], c["output"])
    torch.testing.assert_close(a["alpha"].sum(1), torch.ones(2))
    assert (a["beta"].abs() <= 1).all() and (a["sigma_alpha"] > 0).all()
