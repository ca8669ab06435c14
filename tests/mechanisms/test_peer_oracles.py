"""Public implementations on PyPI as further oracles: weights copied across explicitly, outputs (and attention
maps where both expose them) compared in float64. Where a package departs from the paper, the test pins the
difference. Each test skips when its package is not installed (scripts/setup.sh --test installs them).

Packages whose top-level ``__init__`` imports unrelated models needing torchvision (vit-pytorch,
self-attention-cv) or triton (performer-pytorch through local-attention) are loaded one submodule at a time,
without running that ``__init__``; so is mmsegmentation, whose heads package imports every head, some of them
needing mmcv's compiled operators."""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from service.mechanisms import registry, runtime

DT = torch.float64


def peer(package: str, module: str, stand_ins: dict[str, dict] | None = None):
    """``package.module`` of an installed peer; skip when the package is absent. When the package's own
    ``__init__`` cannot be imported here, the submodule is loaded under a bare package object; modules named
    in ``stand_ins`` (imported by the submodule but not used by what is compared) get inert stand-ins."""
    name = f"{package}.{module}"
    if name in sys.modules:
        return sys.modules[name]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - any failure of the package's own import chain
        pass
    for dep, attrs in (stand_ins or {}).items():
        try:
            importlib.import_module(dep)
        except Exception:  # noqa: BLE001
            sys.modules[dep] = types.SimpleNamespace(**attrs)
    spec = importlib.util.find_spec(package)
    bare = types.ModuleType(package)
    bare.__path__ = list(spec.submodule_search_locations)
    bare.__spec__ = spec
    sys.modules[package] = bare
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.skip(f"{name} cannot be imported here: {exc}")


def build(slug, shapes, **params):
    mech = registry.get(slug)
    resolved = mech.validate(shapes, params)
    return mech, runtime.build_module(mech, shapes, resolved, seed=7, dtype=DT)


def close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# ------------------------------------------------------------------ slot-attention (lucidrains)

def test_slot_attention_package_with_qkv_bias():
    sa = peer("slot_attention", "slot_attention")
    d, k = 16, 4
    mech, ours = build("slot-attention", {"x": (2, 10, d)}, num_slots=k, slot_dim=d, mlp_hidden=32, qkv_bias=True)
    theirs = sa.SlotAttention(num_slots=k, dim=d, iters=3, eps=1e-8, hidden_dim=32).double().eval()
    s = ours.state_dict()
    theirs.load_state_dict({
        "slots_mu": s["slots_mu"], "slots_logsigma": s["slots_log_sigma"],
        **{f"to_{n}.{p}": s[f"to_{n}.{p}"] for n in "qkv" for p in ("weight", "bias")},
        **{f"gru.{p}": s[f"gru.{p}"] for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
        "mlp.0.weight": s["mlp1.weight"], "mlp.0.bias": s["mlp1.bias"],
        "mlp.2.weight": s["mlp2.weight"], "mlp.2.bias": s["mlp2.bias"],
        "norm_input.weight": s["norm_inputs.weight"], "norm_input.bias": s["norm_inputs.bias"],
        "norm_slots.weight": s["norm_slots.weight"], "norm_slots.bias": s["norm_slots.bias"],
        "norm_pre_ff.weight": s["norm_mlp.weight"], "norm_pre_ff.bias": s["norm_mlp.bias"]})
    x = torch.randn(2, 10, d, dtype=DT)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        want = theirs(x)
        torch.manual_seed(11)                       # the package draws its initial slots from the global RNG
        init = s["slots_mu"] + s["slots_log_sigma"].exp() * torch.randn(2, k, d, dtype=DT)
    with torch.no_grad():
        got, _, _ = ours.iterate(x, init)
    close(got, want)
    # the paper's form (no biases) is a different function of the same weights
    with torch.no_grad():
        for n in ("to_q", "to_k", "to_v"):
            getattr(theirs, n).bias.zero_()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        zero_bias = theirs(x)
    assert not torch.allclose(zero_bias, want)


# ------------------------------------------------------------------ resnest

@pytest.mark.parametrize("radix,groups", [(2, 1), (4, 2), (1, 1)])
def test_resnest_splat(radix, groups):
    splat = peer("resnest", "torch.splat")
    c = 32
    mech, ours = build("split-attention", {"x": (2, c, 5, 6)}, radix=radix, cardinality=groups)
    theirs = splat.SplAtConv2d(c, c, 3, padding=1, groups=groups, bias=False, radix=radix, reduction_factor=4,
                               norm_layer=torch.nn.BatchNorm2d).double().eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():                       # non-trivial BatchNorm statistics on both sides
        for m in ours.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=DT) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=DT) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g, dtype=DT) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g, dtype=DT) * 0.1)
    theirs.load_state_dict({k: v for k, v in ours.state_dict().items()}, strict=True)
    x = torch.randn(2, c, 5, 6, dtype=DT)
    got = runtime.forward(mech, ours, {"x": x})
    close(got["output"], theirs(x))


# ------------------------------------------------------------------ External-Attention-pytorch (fightingcv)

def test_fightingcv_se_has_no_fc_biases():
    se = peer("fightingcv_attention", "attention.SEAttention")
    mech, ours = build("squeeze-and-excitation", {"x": (2, 32, 4, 5)}, reduction=8)
    theirs = se.SEAttention(channel=32, reduction=8).double().eval()
    s = ours.state_dict()
    theirs.load_state_dict({"fc.0.weight": s["fc1.weight"], "fc.2.weight": s["fc2.weight"]})
    x = torch.randn(2, 32, 4, 5, dtype=DT)
    with torch.no_grad():                      # the package has no biases in the excitation MLP
        ours.fc1.bias.zero_()
        ours.fc2.bias.zero_()
    close(runtime.forward(mech, ours, {"x": x})["output"], theirs(x))


@pytest.mark.parametrize("k", [3, 5])
def test_fightingcv_eca_has_a_conv_bias_and_fixed_k(k):
    eca = peer("fightingcv_attention", "attention.ECAAttention")
    mech, ours = build("efficient-channel-attention", {"x": (2, 64, 3, 4)}, kernel_size=k)
    theirs = eca.ECAAttention(kernel_size=k).double().eval()
    theirs.load_state_dict({"conv.weight": ours.state_dict()["conv.weight"], "conv.bias": torch.zeros(1, dtype=DT)})
    x = torch.randn(2, 64, 3, 4, dtype=DT)
    got = runtime.forward(mech, ours, {"x": x})
    close(got["output"], theirs(x))
    with torch.no_grad():                      # the paper's C1D has no bias; the package adds one
        theirs.conv.bias.fill_(0.3)
    close(theirs(x), x * torch.sigmoid(torch.logit(got["weights"]) + 0.3)[:, :, None, None])


def test_fightingcv_double_attention_normalises_over_the_batch():
    a2 = peer("fightingcv_attention", "attention.A2Atttention")
    c = 16
    mech, ours = build("double-attention", {"x": (2, c, 4, 3)}, reduction_m=2, reduction_n=4)
    m, n = c // 2, c // 4
    theirs = a2.DoubleAttention(c, m, n, reconstruct=True).double().eval()
    s = ours.state_dict()
    theirs.load_state_dict({"convA.weight": s["conv_a.weight"], "convA.bias": s["conv_a.bias"],
                            "convB.weight": s["conv_b.weight"], "convB.bias": s["conv_b.bias"],
                            "convV.weight": s["conv_v.weight"], "convV.bias": s["conv_v.bias"],
                            "conv_reconstruct.weight": s["conv_out.weight"], "conv_reconstruct.bias": s["conv_out.bias"]})
    x = torch.randn(2, c, 4, 3, dtype=DT)
    got = runtime.forward(mech, ours, {"x": x})
    a = F.conv2d(x, s["conv_a.weight"], s["conv_a.bias"]).flatten(2)
    b = F.conv2d(x, s["conv_b.weight"], s["conv_b.bias"]).flatten(2)
    v = F.conv2d(x, s["conv_v.weight"], s["conv_v.bias"]).flatten(2)

    def out(gather, dist):
        z = (a @ gather.transpose(1, 2) @ dist).reshape(2, m, 4, 3)
        return F.conv2d(z, s["conv_out.weight"], s["conv_out.bias"])
    # ours: gathering maps normalised over positions (Eq. 3), distribution vectors over the N descriptors
    # (Eq. 5), plus the residual of Sec. 3.3
    close(got["gather_maps"].flatten(2), b.softmax(dim=2))
    close(got["distribute_weights"].flatten(2), v.softmax(dim=1))
    close(got["output"], x + out(b.softmax(dim=2), v.softmax(dim=1)))
    # the package calls softmax without dim on [B, N, HW] tensors, which PyTorch resolves to dim 0: both
    # attentions are normalised across the images of the batch; and there is no residual
    with pytest.warns(UserWarning, match="dim"):
        want = theirs(x)
    close(want, out(b.softmax(dim=0), v.softmax(dim=0)))
    assert not torch.allclose(want, got["output"] - x)


def test_fightingcv_cbam_block_adds_a_residual_and_a_spatial_bias():
    cb = peer("fightingcv_attention", "attention.CBAM")
    c, k = 32, 7
    mech, ours = build("cbam", {"x": (2, c, 6, 5)}, reduction=8, spatial_kernel=k)
    theirs = cb.CBAMBlock(channel=c, reduction=8, kernel_size=k).double().eval()
    s = ours.state_dict()
    theirs.load_state_dict({"ca.se.0.weight": s["mlp_fc1.weight"][:, :, None, None],
                            "ca.se.2.weight": s["mlp_fc2.weight"][:, :, None, None],
                            # the package stacks [max; avg] along channels, the paper [avg; max]
                            "sa.conv.weight": s["spatial_conv.weight"].flip(1),
                            "sa.conv.bias": torch.zeros(1, dtype=DT)})
    x = torch.randn(2, c, 6, 5, dtype=DT)
    got = runtime.forward(mech, ours, {"x": x})
    close(theirs.ca(x)[:, :, 0, 0], got["channel_weights"])
    close(theirs(x), got["output"] + x)              # CBAMBlock returns F'' + F (the residual of a ResBlock)
    with torch.no_grad():
        theirs.sa.conv.bias.fill_(-0.4)
    f1 = x * got["channel_weights"][:, :, None, None]
    close(theirs(x), f1 * torch.sigmoid(torch.logit(got["spatial_map"]) - 0.4) + x)


def test_fightingcv_criss_cross_with_unit_gamma():
    cc = peer("fightingcv_attention", "attention.CrissCrossAttention")
    c = 16
    theirs = cc.CrissCrossAttention(c).double().eval()
    for recurrence in (1, 2):
        mech, ours = build("criss-cross-attention", {"x": (2, c, 5, 4)}, reduction=8, recurrence=recurrence)
        theirs.load_state_dict({**{f"{a}_conv.{p}": ours.state_dict()[f"{a}.{p}"]
                                   for a in ("query", "key", "value") for p in ("weight", "bias")},
                                "gamma": torch.ones(1, dtype=DT)})   # the package scales by gamma (zero at init)
        x = torch.randn(2, c, 5, 4, dtype=DT)
        want = x
        with torch.no_grad():
            for _ in range(recurrence):                  # RCCA: the same module applied again
                want = theirs(want)
        close(runtime.forward(mech, ours, {"x": x})["output"], want)


# ------------------------------------------------------------------ perceiver-pytorch

def test_perceiver_pytorch_blocks_with_geglu():
    pp = peer("perceiver_pytorch", "perceiver_pytorch")
    d, heads, bands, mu = 16, 4, 3, 10.0
    shape = (2, 3, 4, 5)
    mech, ours = build("perceiver", {"x": shape}, num_latents=6, latent_dim=d, num_bands=bands, max_resolution=mu,
                       self_layers=2, heads=heads, widening=4, feed_forward="geglu")
    with torch.no_grad():                      # the package's q/k/v projections have no biases
        ours.cross.q.bias.zero_(), ours.cross.k.bias.zero_(), ours.cross.v.bias.zero_()
        for layer in ours.layers:
            layer.qkv.bias.zero_()
    s = ours.state_dict()
    c_in = 3 + 2 * (2 * bands + 1)
    cross = pp.PreNorm(d, pp.Attention(d, c_in, heads=1, dim_head=d), context_dim=c_in).double().eval()
    cross.load_state_dict({"norm.weight": s["cross.norm_latent.weight"], "norm.bias": s["cross.norm_latent.bias"],
                           "norm_context.weight": s["cross.norm_input.weight"],
                           "norm_context.bias": s["cross.norm_input.bias"],
                           "fn.to_q.weight": s["cross.q.weight"],
                           "fn.to_kv.weight": torch.cat([s["cross.k.weight"], s["cross.v.weight"]]),
                           "fn.to_out.weight": s["cross.proj.weight"], "fn.to_out.bias": s["cross.proj.bias"]})

    def ff(prefix, norm):
        f = pp.PreNorm(d, pp.FeedForward(d, mult=4)).double().eval()
        f.load_state_dict({"norm.weight": s[f"{prefix}.{norm}.weight"], "norm.bias": s[f"{prefix}.{norm}.bias"],
                           "fn.net.0.weight": s[f"{prefix}.mlp.fc1.weight"], "fn.net.0.bias": s[f"{prefix}.mlp.fc1.bias"],
                           "fn.net.2.weight": s[f"{prefix}.mlp.fc2.weight"], "fn.net.2.bias": s[f"{prefix}.mlp.fc2.bias"]})
        return f

    x = torch.randn(*shape, dtype=DT)
    # the package's Fourier encoding, per axis [sin(f_k pi p), cos(f_k pi p), p], rearranged to ours:
    # [p_h, p_w, sin_h(K), sin_w(K), cos_h(K), cos_w(K)]
    axes = [torch.linspace(-1.0, 1.0, n, dtype=DT) for n in shape[2:]]
    pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 2)
    enc = pp.fourier_encode(pos, mu, bands)                                    # [M, 2, 2K + 1]
    mine = torch.cat([enc[:, :, -1], enc[:, :, :bands].flatten(1), enc[:, :, bands:2 * bands].flatten(1)], dim=-1)
    byte = torch.cat([x.flatten(2).transpose(1, 2), mine.expand(2, -1, -1)], dim=-1)
    with torch.no_grad():
        z = s["latents"].expand(2, -1, -1)
        z = cross(z, context=byte) + z
        z = ff("cross", "norm_mlp")(z) + z
        for i in range(2):
            att = pp.PreNorm(d, pp.Attention(d, heads=heads, dim_head=d // heads)).double().eval()
            att.load_state_dict({"norm.weight": s[f"layers.{i}.norm1.weight"], "norm.bias": s[f"layers.{i}.norm1.bias"],
                                 "fn.to_q.weight": s[f"layers.{i}.qkv.weight"][:d],
                                 "fn.to_kv.weight": s[f"layers.{i}.qkv.weight"][d:],
                                 "fn.to_out.weight": s[f"layers.{i}.proj.weight"],
                                 "fn.to_out.bias": s[f"layers.{i}.proj.bias"]})
            z = att(z) + z
            z = ff(f"layers.{i}", "norm2")(z) + z
    close(runtime.forward(mech, ours, {"x": x})["output"], z)


# ------------------------------------------------------------------ axial-attention (lucidrains)

def test_axial_attention_package_is_the_position_free_scaled_case():
    ax = peer("axial_attention", "axial_attention")
    c, h, w, heads = 8, 5, 4, 2
    dh = c // heads
    mech, ours = build("axial-attention", {"x": (2, c, h, w)}, heads=heads)
    theirs = ax.AxialAttention(dim=c, num_dimensions=2, heads=heads, dim_index=1, sum_axial_out=False).double().eval()
    s = ours.state_dict()
    sd = {}
    for i, axis in enumerate(("height", "width")):           # the package attends along H first, then W
        wq, wk, wv = s[f"{axis}.qkv.weight"].chunk(3)
        p = f"axial_attentions.{i}.fn."
        sd[p + "to_q.weight"] = wq * math.sqrt(dh)             # cancels the package's 1/sqrt(d) (Eq. 4 has none)
        sd[p + "to_kv.weight"] = torch.cat([wk, wv])
        sd[p + "to_out.weight"] = torch.eye(c, dtype=DT)       # Eq. 4 has no output projection
        sd[p + "to_out.bias"] = torch.zeros(c, dtype=DT)
    theirs.load_state_dict(sd)
    x = torch.randn(2, c, h, w, dtype=DT)
    with torch.no_grad():                                      # the package has no positional terms
        for axis in (ours.height, ours.width):
            for r in (axis.rel_q, axis.rel_k, axis.rel_v):
                r.zero_()
    close(runtime.forward(mech, ours, {"x": x})["output"], theirs(x))
    with torch.no_grad():
        ours.height.rel_k.normal_()
    assert not torch.allclose(runtime.forward(mech, ours, {"x": x})["output"], theirs(x))


# ------------------------------------------------------------------ vit-pytorch

def test_vit_pytorch_attention_is_pre_norm_with_an_output_bias():
    vit = peer("vit_pytorch", "vit")
    d, heads = 32, 4
    mech, ours = build("transformer", {"x": (2, 7, d)}, heads=heads)
    theirs = vit.Attention(d, heads=heads, dim_head=d // heads).double().eval()
    s = ours.state_dict()
    norm = torch.nn.LayerNorm(d).double()
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    theirs.load_state_dict({"norm.weight": norm.weight, "norm.bias": norm.bias,
                            "to_qkv.weight": torch.cat([s["self_attn.q_proj.weight"], s["self_attn.k_proj.weight"],
                                                        s["self_attn.v_proj.weight"]]),
                            "to_out.0.weight": s["self_attn.out_proj.weight"],
                            "to_out.0.bias": torch.zeros(d, dtype=DT)})
    x = torch.randn(2, 7, d, dtype=DT)
    with torch.no_grad():
        got, weights = ours.self_attn(norm(x))
        want = theirs(x)
    close(got, want)
    close(weights.sum(-1), torch.ones(2, heads, 7, dtype=DT))


def test_vit_pytorch_encoder_block_and_patch_projection():
    vit = peer("vit_pytorch", "vit")
    c, p, e, heads = 3, 4, 16, 4
    mech, ours = build("vision-transformer", {"x": (2, c, 8, 12)}, patch_size=p, embed_dim=e, heads=heads,
                       mlp_ratio=2)
    blk = ours.block
    with torch.no_grad():
        blk.qkv.bias.zero_()                                   # the package's to_qkv has no bias
    attn = vit.Attention(e, heads=heads, dim_head=e // heads).double().eval()
    ff = vit.FeedForward(e, 2 * e).double().eval()
    attn.load_state_dict({"norm.weight": blk.norm1.weight, "norm.bias": blk.norm1.bias,
                          "to_qkv.weight": blk.qkv.weight,
                          "to_out.0.weight": blk.proj.weight, "to_out.0.bias": blk.proj.bias})
    ff.load_state_dict({"net.0.weight": blk.norm2.weight, "net.0.bias": blk.norm2.bias,
                        "net.1.weight": blk.fc1.weight, "net.1.bias": blk.fc1.bias,
                        "net.4.weight": blk.fc2.weight, "net.4.bias": blk.fc2.bias})
    embed = vit.ViT(image_size=(8, 12), patch_size=p, num_classes=0, dim=e, depth=1, heads=heads, mlp_dim=2 * e,
                    channels=c).double().eval().to_patch_embedding
    # the package flattens a patch as (p1 p2 c); our convolution weight is [E, c, p1, p2]
    embed[2].weight.data.copy_(ours.patch_embed.weight.permute(0, 2, 3, 1).reshape(e, -1))
    embed[2].bias.data.copy_(ours.patch_embed.bias)
    x = torch.randn(2, c, 8, 12, dtype=DT)
    got = runtime.forward(mech, ours, {"x": x})
    with torch.no_grad():
        tokens = embed[2](embed[0](x))                         # patch projection without the package's LayerNorms
        z = torch.cat([ours.cls_token.expand(2, -1, -1), tokens], dim=1) + ours.pos_embed
        default_eps = ff(attn(z) + z) + attn(z) + z            # the package's LayerNorms use eps 1e-5
        attn.norm.eps = ff.net[0].eps = 1e-6                   # ViT's (and timm's) 1e-6
        z = attn(z) + z
        z = ff(z) + z
        assert not torch.allclose(embed(x), tokens)            # the package also normalises patches and tokens
    close(got["output"], z)
    assert not torch.allclose(got["output"], default_eps, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ performer-pytorch (FAVOR+), in expectation

def test_performer_and_rfa_estimate_the_same_softmax():
    """RFA (trigonometric features of l2-normalised q, k) and Performer's positive features both estimate
    softmax(sigma^2 q^.k^); with many features both attention maps approach the exact one and each other."""
    perf = peer("performer_pytorch", "performer_pytorch", stand_ins={"local_attention": {"LocalAttention": object}})
    n, d, sigma, feats = 6, 8, 1.2, 8192
    mech, ours = build("random-feature-attention", {"x": (1, n, d)}, heads=1, num_features=feats, sigma=sigma)
    x = torch.randn(1, n, d, dtype=DT)
    with torch.no_grad():
        q, k, _ = ours.qkv(x).chunk(3, dim=-1)
        qh, kh = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    exact = torch.softmax(sigma ** 2 * qh @ kh.transpose(1, 2), dim=-1)[0]
    rfa = runtime.forward(mech, ours, {"x": x})["attention"][0, 0]
    torch.manual_seed(5)
    fast = perf.FastAttention(dim_heads=d, nb_features=feats).double()
    scale = sigma * d ** 0.25                    # the package estimates exp(q.k / sqrt(d))
    eye = torch.eye(n, dtype=DT)[None, None]     # values = identity: the output rows are the attention rows
    with torch.no_grad():
        favor = fast((qh * scale)[:, None], (kh * scale)[:, None], eye)[0, 0]
    assert (rfa - exact).abs().max() < 0.03
    assert (favor - exact).abs().max() < 0.03
    assert (rfa - favor).abs().max() < 0.05
    close(favor.sum(-1), torch.ones(n, dtype=DT), tol=1e-8)


# ------------------------------------------------------------------ self-attention-cv (Axial-DeepLab layer)

def _identity_batchnorms(module):
    """Eval-mode BatchNorms that compute the identity (running variance 1 - eps), so the position-sensitive
    attention underneath can be compared with Eq. 4, which has none."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)
                m.weight.fill_(1.0)
                m.bias.zero_()
    return module.eval()


def test_self_attention_cv_axial_layer_takes_the_key_term_at_the_query_position():
    sac = peer("self_attention_cv", "axial_attention_deeplab.axial_attention")
    c, length, heads = 8, 5, 2
    d = c // heads
    mech, ours = build("axial-attention", {"x": (2, c, length, 3)}, heads=heads)
    layer = ours.height                                        # one axis: [..., L, C]
    theirs = _identity_batchnorms(sac.AxialAttention(dim=length, in_channels=c, heads=heads, dim_head_kq=d).double())
    w = layer.qkv.weight                                       # ours: row t*C + h*d + j (t = q, k, v)
    order = torch.tensor([[t * c + h * d + j for h in range(heads)] for t in range(3) for j in range(d)]).flatten()
    # theirs: row (t*d + j)*heads + h ('b (q h) d' with q = the 3d qkv channels)
    their_w = w[order].reshape(3 * d * heads, c, 1)
    # relative embeddings: theirs index o - p, ours p - o -> flip the offset axis; rows q, k, v of width d
    rel = torch.cat([layer.rel_q, layer.rel_k, layer.rel_v], dim=1).flip(0).T    # [3d, 2L - 1]
    theirs.to_qvk[0].weight.data.copy_(their_w)
    theirs.RelativePosEncQKV.relative.data.copy_(rel)
    x = torch.randn(6, length, c, dtype=DT)                    # 6 = B * W columns
    with torch.no_grad():
        want = theirs(x.transpose(1, 2)).transpose(1, 2)       # [6, L, C]
        got, _ = layer(x)
        assert not torch.allclose(got, want)                  # the key term differs (below)
        # the package's k-term is k_o . r^k_{p-o} (key taken at the query position), the paper's k_p . r^k_{p-o}
        q, k, v = layer.qkv(x).reshape(6, length, 3, heads, d).movedim(2, 0)
        rq, rk, rv = (r[layer.rel_index] for r in (layer.rel_q, layer.rel_k, layer.rel_v))
        logits = (torch.einsum("bohd,bphd->bhop", q, k) + torch.einsum("bohd,opd->bhop", q, rq)
                  + torch.einsum("bohd,opd->bhop", k, rk))
        a = logits.softmax(-1)
        y = torch.einsum("bhop,bphd->bohd", a, v) + torch.einsum("bhop,opd->bohd", a, rv)
        close(want, y.reshape(6, length, c))
        layer.rel_k.zero_()                                    # without the key term both agree
        theirs.RelativePosEncQKV.relative.data[d:2 * d].zero_()
        close(layer(x)[0], theirs(x.transpose(1, 2)).transpose(1, 2))


# ------------------------------------------------------------------ OpenMMLab: mmcv's NonLocal2d, mmseg's DANet modules

def _copy_conv(dst: torch.nn.Conv2d, src: torch.nn.Conv2d) -> None:
    dst.weight.data.copy_(src.weight.data.reshape(dst.weight.shape))
    if src.bias is not None:
        dst.bias.data.copy_(src.bias.data)


@pytest.mark.parametrize("subsample", [False, True])
@pytest.mark.parametrize("pairwise", ["embedded_gaussian", "gaussian", "dot_product", "concatenation"])
def test_mmcv_non_local_2d(pairwise, subsample):
    cnn = peer("mmcv", "cnn")
    c, reduction = 8, 2
    _, ours = build("non-local", {"x": (2, c, 6, 4)}, pairwise=pairwise, subsample=subsample)
    theirs = cnn.NonLocal2d(c, reduction=reduction, use_scale=False, mode=pairwise, sub_sample=subsample,
                            norm_cfg=None).double()
    unpooled = (lambda m: m[0]) if subsample else (lambda m: m)
    _copy_conv(unpooled(theirs.g).conv, ours.g)
    _copy_conv(theirs.conv_out.conv, ours.w_z)
    if pairwise != "gaussian":
        _copy_conv(theirs.theta.conv, ours.theta)
        _copy_conv(unpooled(theirs.phi).conv, ours.phi)
    if pairwise == "concatenation":  # the package's [theta, phi] -> 1 projection with its ReLU is w_f
        theirs.concat_project.conv.weight.data.copy_(ours.w_f.weight.data.reshape(1, 2 * c // reduction, 1, 1))
    x = torch.randn(2, c, 6, 4, dtype=DT)
    with torch.no_grad():
        close(ours(x)["output"], theirs(x))


def test_mmcv_non_local_default_scales_the_embedded_gaussian_by_the_inner_width():
    cnn = peer("mmcv", "cnn")
    c = 8
    _, ours = build("non-local", {"x": (1, c, 5, 5)})
    theirs = cnn.NonLocal2d(c, norm_cfg=None).double()          # use_scale=True is the package's default
    for mine, their in ((ours.g, theirs.g.conv), (ours.w_z, theirs.conv_out.conv), (ours.theta, theirs.theta.conv),
                        (ours.phi, theirs.phi.conv)):
        _copy_conv(their, mine)
    x = torch.randn(1, c, 5, 5, dtype=DT)
    with torch.no_grad():
        assert not torch.allclose(ours(x)["output"], theirs(x))  # the paper's Eq. 3 has no 1/sqrt(C') (Sec. 3.2)
        ours.theta.weight.div_(math.sqrt(c // 2))
        ours.theta.bias.div_(math.sqrt(c // 2))
        close(ours(x)["output"], theirs(x))


def _mmseg_head(module: str, helpers: bool = False) -> types.ModuleType:
    """``mmseg.models.decode_heads.<module>`` without the package's __init__ files, which import every head,
    some of them needing mmcv's compiled operators (mmcv-lite has none). The registry and the decode-head base
    class, which the compared modules do not use, get stand-ins; with ``helpers``, so do mmseg.utils and
    mmseg.models.utils, the latter holding only the real SelfAttentionBlock."""
    name = f"mmseg.models.decode_heads.{module}"
    if importlib.util.find_spec("mmseg") is None or importlib.util.find_spec("mmcv") is None:
        pytest.skip("mmsegmentation / mmcv-lite are not installed")
    root = importlib.util.find_spec("mmseg").submodule_search_locations[0]
    saved = {k: v for k, v in sys.modules.items() if k == "mmseg" or k.startswith("mmseg.")}

    def bare(pkg: str, path: str) -> types.ModuleType:
        mod = types.ModuleType(pkg)
        mod.__path__ = [f"{root}/{path}"]
        sys.modules[pkg] = mod
        return mod

    def load(mod_name: str, path: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(mod_name, f"{root}/{path}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
        return mod

    try:
        bare("mmseg", "")
        sys.modules["mmseg.registry"] = types.SimpleNamespace(
            MODELS=types.SimpleNamespace(register_module=lambda *a, **k: (lambda cls: cls)))
        bare("mmseg.models", "models")
        if helpers:
            sys.modules["mmseg.utils"] = types.SimpleNamespace(SampleList=list, add_prefix=None)
            utils = bare("mmseg.models.utils", "models/utils")
            utils.SelfAttentionBlock = load("mmseg.models.utils.self_attention_block",
                                            "models/utils/self_attention_block.py").SelfAttentionBlock
        bare("mmseg.models.decode_heads", "models/decode_heads")
        sys.modules["mmseg.models.decode_heads.decode_head"] = types.SimpleNamespace(BaseDecodeHead=torch.nn.Module)
        return load(name, f"models/decode_heads/{module}.py")
    except ImportError as exc:
        pytest.skip(f"{name} cannot be loaded here: {exc}")
    finally:
        for k in [k for k in sys.modules if k == "mmseg" or k.startswith("mmseg.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_mmseg_danet_position_and_released_channel_modules():
    da = _mmseg_head("da_head", helpers=True)
    c = 16
    _, ours = build("dual-attention", {"x": (2, c, 5, 4)}, cam_energy="released")
    pam, cam = da.PAM(c, c // 8).double(), da.CAM().double()
    _copy_conv(pam.query_project, ours.conv_c)   # C: taken at the output position j
    _copy_conv(pam.key_project, ours.conv_b)     # B: taken at the attended positions i
    _copy_conv(pam.value_project, ours.conv_d)
    with torch.no_grad():
        ours.alpha.fill_(0.7)
        ours.beta.fill_(-0.4)
        pam.gamma.scale.fill_(0.7)
        cam.gamma.scale.fill_(-0.4)
        x = torch.randn(2, c, 5, 4, dtype=DT)
        close(ours(x)["output"], pam(x) + cam(x))          # E^p + E^c, each with its residual
        close(ours(x, need_weights=False)["output"], pam(x) + cam(x))
        # the paper's Eq. 3 (softmax of A A^T, the default here) is not the package's softmax(max - A A^T)
        _, paper = build("dual-attention", {"x": (2, c, 5, 4)})
        paper.load_state_dict(ours.state_dict())
        assert not torch.allclose(paper(x)["output"], pam(x) + cam(x))


def test_mmseg_ema_module_reconstruction():
    ema = _mmseg_head("ema_head")
    c, k, stages = 8, 6, 3
    _, ours = build("expectation-maximization-attention", {"x": (2, c, 5, 4)}, bases=k, iterations=stages)
    theirs = ema.EMAModule(c, k, stages, momentum=0.1).double().eval()
    theirs.bases.copy_(ours.mu)
    x = torch.randn(2, c, 5, 4, dtype=DT)
    with torch.no_grad():
        got = ours(x)
        z = got["responsibilities"].flatten(2)                   # [B, K, N]
        recon = got["bases"] @ z                                  # X~ = mu Z^T: [B, C, N]
        want = theirs(ours.conv_in(x)).flatten(2)
        # the M-step weights are z / (1e-6 + sum z) here (the authors' EMANet code), an L1 normalisation in the
        # package: they differ by one factor per base, which the L2 normalisation of the base removes
        close(recon, want)
        feats = ours.conv_in(x).flatten(2)
        close(got["bases"], F.normalize(feats @ F.normalize(z.transpose(1, 2), p=1, dim=1), dim=1))  # last M-step
