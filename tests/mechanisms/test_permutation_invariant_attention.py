"""Set Transformer (SAB + PMA) against a NumPy transcription of Lee et al. Eqs. 5-7, 11, against
torch.nn.MultiheadAttention for the Multihead step, and for permutation invariance."""

from __future__ import annotations

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("permutation-invariant-attention")


def lin(sd, name, x):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def layer_norm(sd, name, x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def multihead(sd, p, x, y, h):
    q, k, v = lin(sd, f"{p}.q", x), lin(sd, f"{p}.k", y), lin(sd, f"{p}.v", y)
    d = q.shape[-1] // h
    heads, weights = [], []
    for j in range(h):
        sl = slice(j * d, (j + 1) * d)
        s = np.einsum("qd,kd->qk", q[:, sl], k[:, sl]) / np.sqrt(d)
        a = np.exp(s - s.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        heads.append(a @ v[:, sl])
        weights.append(a)
    return lin(sd, f"{p}.o", np.concatenate(heads, 1)), np.stack(weights)


def mab(sd, p, x, y, h):
    a, w = multihead(sd, f"{p}.attn", x, y, h)
    hh = layer_norm(sd, f"{p}.ln1", x + a)
    return layer_norm(sd, f"{p}.ln2", hh + np.maximum(lin(sd, f"{p}.rff.fc", hh), 0)), w


def test_matches_numpy_equations():
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    params = {"heads": 3, "seeds": 2, "layer_norm": True}
    module = runtime.build_module(MECH, {"x": x.shape}, params, seed=5, dtype=torch.float64)
    with torch.no_grad():
        for n, t in module.named_parameters():
            if "ln" in n:
                t.uniform_(0.5, 1.5)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    got = runtime.forward(MECH, module, {"x": x})
    for b in range(2):
        z, w_enc = mab(sd, "sab", x[b].numpy(), x[b].numpy(), 3)
        out, w_pool = mab(sd, "pma", sd["seeds"], np.maximum(lin(sd, "pool_rff.fc", z), 0), 3)
        np.testing.assert_allclose(got["output"][b].numpy(), out, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got["encoder_attention"][b].numpy(), w_enc, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got["pooling_attention"][b].numpy(), w_pool, rtol=1e-10, atol=1e-12)


def test_multihead_conforms_to_torch_multiheadattention():
    d, h = 16, 4
    module = runtime.build_module(MECH, {"x": (2, 5, d)}, MECH.resolve_params({"heads": h}), seed=1)
    ours = module.sab.attn
    theirs = torch.nn.MultiheadAttention(d, h, batch_first=True)
    theirs.load_state_dict({
        "in_proj_weight": torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]),
        "in_proj_bias": torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]),
        "out_proj.weight": ours.o.weight, "out_proj.bias": ours.o.bias})
    x, y = torch.randn(2, 3, d), torch.randn(2, 5, d)
    with torch.no_grad():
        a, wa = ours(x, y)
        b, wb = theirs(x, y, y, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(wa, wb, rtol=1e-5, atol=1e-6)


def test_permutation_invariant_and_encoder_equivariant():
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    params = MECH.resolve_params({"heads": 2, "seeds": 3})
    module = runtime.build_module(MECH, {"x": x.shape}, params, seed=0, dtype=torch.float64)
    a = runtime.forward(MECH, module, {"x": x})
    b = runtime.forward(MECH, module, {"x": x[:, perm]})
    torch.testing.assert_close(a["output"], b["output"])
    torch.testing.assert_close(a["pooling_attention"][..., perm], b["pooling_attention"])
    torch.testing.assert_close(a["encoder_attention"][:, :, perm][..., perm], b["encoder_attention"])
    torch.testing.assert_close(a["pooling_attention"].sum(-1), torch.ones(2, 2, 3, dtype=torch.float64))
