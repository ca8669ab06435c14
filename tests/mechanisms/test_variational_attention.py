"""Variational attention against a NumPy transcription of Deng et al. (NeurIPS 2018) Secs. 2-3."""

from __future__ import annotations

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("variational-attention")


def softmax(s):
    e = np.exp(s - s.max())
    return e / e.sum()


def test_matches_numpy_equations_and_replayed_draw():
    g = torch.Generator().manual_seed(0)
    q, x, y = (torch.randn(2, 3, 5, generator=g, dtype=torch.float64),
               torch.randn(2, 4, 5, generator=g, dtype=torch.float64),
               torch.randn(2, 3, 5, generator=g, dtype=torch.float64))
    shapes = {"query": q.shape, "source": x.shape, "target": y.shape}
    module = runtime.build_module(MECH, shapes, MECH.defaults(), seed=1, dtype=torch.float64)
    wa, wq = module.prior.weight.detach().numpy(), module.posterior.weight.detach().numpy()
    got = runtime.forward(MECH, module, {"query": q, "source": x, "target": y}, seed=9)
    u = torch.rand(2, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64).numpy()
    for b in range(2):
        for t in range(3):
            p = softmax(np.array([q[b, t].numpy() @ wa.T @ x[b, j].numpy() for j in range(4)]))
            qq = softmax(np.array([np.concatenate([q[b, t], y[b, t]]) @ wq.T @ x[b, j].numpy() for j in range(4)]))
            np.testing.assert_allclose(got["prior"][b, t].numpy(), p, rtol=1e-10)
            np.testing.assert_allclose(got["posterior"][b, t].numpy(), qq, rtol=1e-10)
            np.testing.assert_allclose(got["kl"][b, t].item(), (qq * np.log(qq / p)).sum(), rtol=1e-9)
            z = int(np.searchsorted(np.cumsum(qq), u[b, t], side="right"))   # inverse-CDF draw
            assert got["sample"][b, t].item() == z
            np.testing.assert_allclose(got["log_prob"][b, t].item(), np.log(qq[z]), rtol=1e-10)
            np.testing.assert_allclose(got["output"][b, t].numpy(), x[b, z].numpy())
            np.testing.assert_allclose(got["soft_context"][b, t].numpy(), p @ x[b].numpy(), rtol=1e-10)


def test_prior_sampling_frequencies_match_prior_and_seed_is_deterministic():
    q, x = torch.randn(1, 1, 4), torch.randn(1, 3, 4)
    module = runtime.build_module(MECH, {"query": q.shape, "source": x.shape}, MECH.defaults(), seed=0)
    a = runtime.forward(MECH, module, {"query": q, "source": x}, seed=3)
    b = runtime.forward(MECH, module, {"query": q, "source": x}, seed=3)
    assert torch.equal(a["sample"], b["sample"])
    qs, xs = q.expand(20000, -1, -1), x.expand(20000, -1, -1)
    many = runtime.forward(MECH, module, {"query": qs, "source": xs}, seed=1)
    freq = torch.bincount(many["sample"].flatten(), minlength=3).double() / 20000
    torch.testing.assert_close(freq, a["prior"][0, 0].double(), atol=0.015, rtol=0)
    torch.testing.assert_close(many["log_prob"].exp(), many["prior"].gather(-1, many["sample"][..., None])[..., 0])
