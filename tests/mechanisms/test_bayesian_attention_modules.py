"""BAM against a NumPy transcription of the Weibull reparameterisation (Fan et al. NeurIPS 2020, Sec. 3),
torch.distributions (Weibull log-density, Weibull-Gamma KL) and a Monte-Carlo check of E[S]."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Gamma, Weibull

from service.mechanisms import registry, runtime

MECH = registry.get("bayesian-attention-modules")


def _setup(params, x, seed=3):
    params = MECH.resolve_params(params)
    module = runtime.build_module(MECH, {"x": x.shape}, params, seed=seed, dtype=torch.float64)
    return module, {k: v.numpy() for k, v in module.state_dict().items()}


def numpy_bam(x, sd, heads, k, u):
    b, n, d = x.shape
    hd = d // heads
    lin = lambda name, t: t @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]  # noqa: E731
    q, kk, v = lin("q", x), lin("kp", x), lin("v", x)
    out_heads = np.zeros((b, n, d))
    weights = np.zeros((b, heads, n, n))
    for bi in range(b):
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            phi = q[bi, :, sl] @ kk[bi, :, sl].T / math.sqrt(hd)
            mean = np.exp(phi - phi.max(1, keepdims=True))
            mean /= mean.sum(1, keepdims=True)
            lam = mean / math.gamma(1 + 1 / k)
            s = lam * (-np.log(1 - u[bi, h])) ** (1 / k)        # Weibull draw
            w = s / s.sum(1, keepdims=True)                      # normalise onto the simplex
            weights[bi, h] = w
            out_heads[bi, :, sl] = w @ v[bi, :, sl]
    return lin("o", out_heads), weights


def test_matches_numpy_weibull_reparameterisation():
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    module, sd = _setup({"heads": 3, "k": 4.0}, x)
    got = runtime.forward(MECH, module, {"x": x}, seed=11)
    u = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(11), dtype=torch.float64).numpy()
    want_out, want_w = numpy_bam(x.numpy(), sd, 3, 4.0, u)
    np.testing.assert_allclose(got["attention"].numpy(), want_w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), want_out, rtol=1e-9, atol=1e-12)


def test_log_prob_and_kl_agree_with_torch_distributions():
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    k, beta = 3.0, 2.0
    module, sd = _setup({"heads": 2, "k": k, "beta": beta}, x)
    got = runtime.forward(MECH, module, {"x": x}, seed=1)
    q = (x @ module.q.weight.T + module.q.bias).reshape(2, 4, 2, 4).transpose(1, 2)
    kk = (x @ module.kp.weight.T + module.kp.bias).reshape(2, 4, 2, 4).transpose(1, 2)
    lam = torch.softmax(q @ kk.transpose(-1, -2) / 2.0, -1) / math.gamma(1 + 1 / k)
    post = Weibull(scale=lam, concentration=torch.full_like(lam, k))
    torch.testing.assert_close(got["log_prob"], post.log_prob(got["unnormalized"]), rtol=1e-9, atol=1e-9)
    g = torch.nn.functional.leaky_relu(kk @ module.prior1.weight.T + module.prior1.bias, 0.1)
    prior_w = torch.softmax((g @ module.prior2.weight.T + module.prior2.bias)[..., 0], -1)
    torch.testing.assert_close(got["prior_attention"], prior_w)
    alpha = (beta * prior_w)[:, :, None, :].expand_as(lam)
    prior = Gamma(alpha, torch.full_like(alpha, beta))
    u = torch.rand(20_000, *lam.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    draws = lam * (-torch.log1p(-u)) ** (1 / k)   # Monte-Carlo KL = E_q[log q(S) - log p(S)]
    want_kl = (post.log_prob(draws) - prior.log_prob(draws)).mean(0)
    torch.testing.assert_close(got["kl"], want_kl, rtol=0.05, atol=0.05)


def test_weights_on_simplex_seeded_and_mean_matches_softmax():
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    module, _ = _setup({"heads": 2, "k": 2.0}, x)
    a = runtime.forward(MECH, module, {"x": x}, seed=5)
    b = runtime.forward(MECH, module, {"x": x}, seed=5)
    c = runtime.forward(MECH, module, {"x": x}, seed=6)
    assert torch.equal(a["attention"], b["attention"]) and not torch.equal(a["attention"], c["attention"])
    torch.testing.assert_close(a["attention"].sum(-1), torch.ones(1, 2, 5, dtype=torch.float64))
    # E[S] = softmax(Phi): average the unnormalised draws over many seeds (batched via a big batch)
    xb = x.expand(2000, -1, -1)
    draws = runtime.forward(MECH, module, {"x": xb}, seed=0)["unnormalized"].mean(0)
    det = MECH.resolve_params({"heads": 2, "k": 2.0, "training": False})
    mdet = runtime.build_module(MECH, {"x": x.shape}, det, seed=3, dtype=torch.float64)
    mean_w = runtime.forward(MECH, mdet, {"x": x})["attention"][0]
    torch.testing.assert_close(draws, mean_w, rtol=0.05, atol=0.01)
