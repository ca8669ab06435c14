"""Slot Attention against a NumPy transcription of Locatello et al. Algorithm 1 (GRU written out),
plus the sampling contract: initial slots are mu + sigma * eps with eps from the generator, and
log_prob is their Gaussian log density."""

from __future__ import annotations

import math

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("slot-attention")


def _ln(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b


def _sig(x):
    return 1 / (1 + np.exp(-x))


def numpy_slot_attention(x, slots, sd, iters, eps):
    s = slots.shape[-1]
    inputs = _ln(x, sd["norm_inputs.weight"], sd["norm_inputs.bias"])
    bias = {n: sd.get(f"to_{n}.bias", 0.0) for n in "qkv"}                # qkv_bias=True only
    k, v = inputs @ sd["to_k.weight"].T + bias["k"], inputs @ sd["to_v.weight"].T + bias["v"]
    wi, wh, bi, bh = sd["gru.weight_ih"], sd["gru.weight_hh"], sd["gru.bias_ih"], sd["gru.bias_hh"]
    for _ in range(iters):
        prev = slots
        q = _ln(slots, sd["norm_slots.weight"], sd["norm_slots.bias"]) @ sd["to_q.weight"].T + bias["q"]
        logits = np.einsum("bnd,bkd->bnk", k, q) / math.sqrt(s)
        attn = np.exp(logits - logits.max(-1, keepdims=True))
        attn = attn / attn.sum(-1, keepdims=True) + eps                  # softmax over slots
        w = attn / attn.sum(1, keepdims=True)                            # weighted mean over inputs
        upd = np.einsum("bnk,bnd->bkd", w, v)
        gi, gh = upd @ wi.T + bi, prev @ wh.T + bh                        # GRU: r, z, n gates
        r = _sig(gi[..., :s] + gh[..., :s])
        z = _sig(gi[..., s:2 * s] + gh[..., s:2 * s])
        n = np.tanh(gi[..., 2 * s:] + r * gh[..., 2 * s:])
        slots = (1 - z) * n + z * prev
        h = np.maximum(_ln(slots, sd["norm_mlp.weight"], sd["norm_mlp.bias"]) @ sd["mlp1.weight"].T
                       + sd["mlp1.bias"], 0)
        slots = slots + h @ sd["mlp2.weight"].T + sd["mlp2.bias"]
    return slots, (attn - eps).transpose(0, 2, 1), w.transpose(0, 2, 1)


def _build(shape, **params):
    p = MECH.validate({"x": shape}, params)
    return runtime.build_module(MECH, {"x": shape}, p, seed=4, dtype=torch.float64), p


def test_matches_numpy_algorithm_1():
    x = torch.randn(2, 10, 6, dtype=torch.float64)
    module, p = _build(x.shape, num_slots=4, iterations=3, slot_dim=8, mlp_hidden=12)
    got = runtime.forward(MECH, module, {"x": x}, seed=9)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, want_attn, want_w = numpy_slot_attention(x.numpy(), got["initial_slots"].numpy(), sd, 3, p["epsilon"])
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["attention"].numpy(), want_attn, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["update_weights"].numpy(), want_w, rtol=1e-10, atol=1e-12)


def test_qkv_bias_variant_matches_numpy():
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    plain, _ = _build(x.shape, num_slots=3, slot_dim=8, mlp_hidden=12)
    assert "to_q.bias" not in plain.state_dict()
    module, p = _build(x.shape, num_slots=3, slot_dim=8, mlp_hidden=12, qkv_bias=True)
    with torch.no_grad():                      # non-zero biases, so leaving one out would show
        for name in ("to_q", "to_k", "to_v"):
            getattr(module, name).bias.copy_(torch.randn(8, dtype=torch.float64))
    got = runtime.forward(MECH, module, {"x": x}, seed=5)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, want_attn, _ = numpy_slot_attention(x.numpy(), got["initial_slots"].numpy(), sd, 3, p["epsilon"])
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["attention"].numpy(), want_attn, rtol=1e-10, atol=1e-12)


def test_sampling_comes_from_the_generator_and_log_prob_matches():
    x = torch.randn(3, 10, 6, dtype=torch.float64)
    module, _ = _build(x.shape, num_slots=5, slot_dim=8)
    a = runtime.forward(MECH, module, {"x": x}, seed=1)
    b = runtime.forward(MECH, module, {"x": x}, seed=1)
    c = runtime.forward(MECH, module, {"x": x}, seed=2)
    assert torch.equal(a["initial_slots"], b["initial_slots"]) and torch.equal(a["output"], b["output"])
    assert not torch.equal(a["initial_slots"], c["initial_slots"])
    eps = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sd = module.state_dict()
    mu, sigma = sd["slots_mu"], sd["slots_log_sigma"].exp()
    torch.testing.assert_close(a["initial_slots"], mu + sigma * eps)
    dist = torch.distributions.Normal(mu.expand(3, 5, 8), sigma.expand(3, 5, 8))
    torch.testing.assert_close(a["log_prob"], dist.log_prob(a["initial_slots"]).sum((1, 2)))


def test_attention_normalisation_and_symmetries():
    x = torch.randn(2, 12, 6, dtype=torch.float64)
    module, _ = _build(x.shape, num_slots=4, slot_dim=8)
    out = runtime.forward(MECH, module, {"x": x}, seed=3)
    torch.testing.assert_close(out["attention"].sum(1), torch.ones(2, 12, dtype=torch.float64))   # over slots
    torch.testing.assert_close(out["update_weights"].sum(2), torch.ones(2, 4, dtype=torch.float64))  # over inputs
    init = out["initial_slots"]
    with torch.no_grad():
        # permutation invariant in the inputs, equivariant in the slots
        pin = torch.randperm(12, generator=torch.Generator().manual_seed(0))
        pk = torch.tensor([2, 0, 3, 1])
        slots, attn, _ = module.iterate(x[:, pin], init[:, pk])
    torch.testing.assert_close(slots, out["output"][:, pk])
    torch.testing.assert_close(attn, out["attention"][:, pk][:, :, pin])
