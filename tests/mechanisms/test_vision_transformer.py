"""ViT stem + encoder block against a NumPy transcription of Dosovitskiy et al. Eqs. 1-3 / 5-8, and
against timm's VisionTransformer (depth 1, no final norm) and its encoder Block with the same weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime
from service.mechanisms.base import MechanismInputError

MECH = registry.get("vision-transformer")


def _ln(x, g, b, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def numpy_vit(x, sd, p, heads):
    b, c, h, w = x.shape
    e_mat = sd["patch_embed.weight"].reshape(sd["patch_embed.weight"].shape[0], -1)  # [E, C*P*P]
    dim = e_mat.shape[0]
    # Eq. 1: flatten each patch (row-major over the patch grid) to a P^2 C vector and project with E
    tokens = []
    for i in range(h // p):
        for j in range(w // p):
            patch = x[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(b, -1)
            tokens.append(patch @ e_mat.T + sd["patch_embed.bias"])
    z0 = np.concatenate([np.broadcast_to(sd["cls_token"], (b, 1, dim)), np.stack(tokens, 1)], 1) + sd["pos_embed"]
    # Eqs. 5-8 on LN(z0)
    y = _ln(z0, sd["block.norm1.weight"], sd["block.norm1.bias"])
    qkv = y @ sd["block.qkv.weight"].T + sd["block.qkv.bias"]
    q, k, v = qkv[..., :dim], qkv[..., dim:2 * dim], qkv[..., 2 * dim:]
    dh = dim // heads
    heads_out, att = [], []
    for m in range(heads):
        sl = slice(m * dh, (m + 1) * dh)
        s = np.einsum("bnd,bmd->bnm", q[..., sl], k[..., sl]) / np.sqrt(dh)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        att.append(a)
        heads_out.append(np.einsum("bnm,bmd->bnd", a, v[..., sl]))
    z1p = np.concatenate(heads_out, -1) @ sd["block.proj.weight"].T + sd["block.proj.bias"] + z0      # Eq. 2
    hdn = _gelu(_ln(z1p, sd["block.norm2.weight"], sd["block.norm2.bias"]) @ sd["block.fc1.weight"].T
                + sd["block.fc1.bias"])
    z1 = hdn @ sd["block.fc2.weight"].T + sd["block.fc2.bias"] + z1p                                    # Eq. 3
    return z1, np.stack(att, 1)


def _build(shape, seed=0, dtype=torch.float64, **params):
    p = MECH.validate({"x": shape}, params)
    return runtime.build_module(MECH, {"x": shape}, p, seed=seed, dtype=dtype), p


def test_matches_numpy_equations():
    x = torch.randn(2, 6, 12, 8, dtype=torch.float64)
    module, p = _build(x.shape, seed=5, patch_size=4, embed_dim=12, heads=3)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, want_att = numpy_vit(x.numpy(), sd, 4, 3)
    got = runtime.forward(MECH, module, {"x": x})
    assert got["output"].shape == (2, 1 + 3 * 2, 12)
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["attention"].numpy(), want_att, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["cls_attention"].numpy(), want_att[:, :, 0, 1:].reshape(2, 3, 3, 2))


def _timm_state(sd):
    return {
        "cls_token": sd["cls_token"], "pos_embed": sd["pos_embed"],
        "patch_embed.proj.weight": sd["patch_embed.weight"], "patch_embed.proj.bias": sd["patch_embed.bias"],
        **{f"blocks.0.{a}": sd[f"block.{b}"] for a, b in (
            ("norm1.weight", "norm1.weight"), ("norm1.bias", "norm1.bias"),
            ("attn.qkv.weight", "qkv.weight"), ("attn.qkv.bias", "qkv.bias"),
            ("attn.proj.weight", "proj.weight"), ("attn.proj.bias", "proj.bias"),
            ("norm2.weight", "norm2.weight"), ("norm2.bias", "norm2.bias"),
            ("mlp.fc1.weight", "fc1.weight"), ("mlp.fc1.bias", "fc1.bias"),
            ("mlp.fc2.weight", "fc2.weight"), ("mlp.fc2.bias", "fc2.bias"))},
    }


def test_conforms_to_timm_vision_transformer(timm_layers):
    import timm.models.vision_transformer as vit

    c, h, w, p, heads = 32, 28, 28, 7, 4
    module, _ = _build((2, c, h, w), seed=2, dtype=torch.float32, patch_size=p, heads=heads)
    theirs = vit.VisionTransformer(img_size=(h, w), patch_size=p, in_chans=c, embed_dim=c, depth=1,
                                   num_heads=heads, mlp_ratio=4.0, qkv_bias=True, num_classes=0,
                                   final_norm=False).eval()
    missing, unexpected = theirs.load_state_dict(_timm_state(module.state_dict()), strict=False)
    assert not unexpected and all(not k.startswith(("blocks", "patch_embed", "pos", "cls")) for k in missing)
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        ours = module(x)["output"]
        torch.testing.assert_close(ours, theirs.forward_features(x), rtol=1e-5, atol=1e-5)
        # the encoder block alone, on arbitrary tokens
        z = torch.randn(2, 17, c)
        torch.testing.assert_close(module.block(z)[0], theirs.blocks[0](z), rtol=1e-5, atol=1e-5)


def test_attention_rows_sum_to_one_and_benchmark_sized_input_runs():
    x = torch.randn(8, 256, 28, 28)
    out = runtime.run(MECH, {"x": x}, {"patch_size": 4}, seed=0)
    assert out["output"].shape == (8, 1 + 49, 256)
    assert out["attention"].shape == (8, 8, 50, 50)
    assert out["cls_attention"].shape == (8, 8, 7, 7)
    torch.testing.assert_close(out["attention"].sum(-1), torch.ones(8, 8, 50))
    fused = runtime.run(MECH, {"x": x}, {"patch_size": 4}, seed=0, need_weights=False)
    assert set(fused) == {"output"}
    torch.testing.assert_close(fused["output"], out["output"], rtol=1e-4, atol=1e-4)


def test_constraint_messages():
    with pytest.raises(MechanismInputError, match="divisible by patch_size"):
        MECH.validate({"x": (1, 256, 28, 28)})            # default patch_size 16 does not divide 28
    for p in (4, 7, 14):
        MECH.validate({"x": (1, 256, 28, 28)}, {"patch_size": p})
    with pytest.raises(MechanismInputError, match="heads"):
        MECH.validate({"x": (1, 10, 28, 28)}, {"patch_size": 7})
    MECH.validate({"x": (1, 10, 28, 28)}, {"patch_size": 7, "embed_dim": 64})
