"""Split-Attention against a loop-per-split/per-group transcription of ResNeSt Eqs. 1-4 and timm's SplitAttn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from service.mechanisms import registry, runtime
from tests.mechanisms.helpers import randomise_batchnorm

MECH = registry.get("split-attention")


def bn(x, sd, name, eps=1e-5):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - sd[f"{name}.running_mean"].view(shape)) / torch.sqrt(sd[f"{name}.running_var"].view(shape) + eps) \
        * sd[f"{name}.weight"].view(shape) + sd[f"{name}.bias"].view(shape)


def reference(x, sd, radix, card):
    """Every (split r, cardinal group k) is its own ungrouped convolution on its input slice; the
    attention MLP is applied per cardinal group with plain matrix products."""
    b, c, h, w = x.shape
    cin_g = c // (radix * card)       # input channels per conv group
    cout_g = c // card                # output channels per (r, k)
    wconv = sd["conv.weight"]
    k = wconv.shape[-1]
    full = torch.zeros(b, radix * c, h, w, dtype=x.dtype)      # conv output, split-major channels
    for r in range(radix):
        for g in range(card):
            grp = r * card + g
            y = F.conv2d(x[:, grp * cin_g:(grp + 1) * cin_g], wconv[grp * cout_g:(grp + 1) * cout_g], padding=k // 2)
            full[:, r * c + g * cout_g:r * c + (g + 1) * cout_g] = y
    if "bn0.weight" in sd:
        full = bn(full, sd, "bn0")
    full = torch.relu(full)
    u = torch.stack([full[:, r * c:(r + 1) * c] for r in range(radix)])   # [R, B, C, H, W]
    s = u.sum(0).mean(dim=(2, 3))                                  # [B, C]
    d = sd["fc1.weight"].shape[0]
    w1, b1 = sd["fc1.weight"][:, :, 0, 0], sd["fc1.bias"]
    w2, b2 = sd["fc2.weight"][:, :, 0, 0], sd["fc2.bias"]
    d_g, o_g = d // card, radix * c // card
    out = torch.zeros(b, c, h, w, dtype=x.dtype)
    weights = torch.zeros(b, radix, c, dtype=x.dtype)
    for g in range(card):
        sg = s[:, g * cout_g:(g + 1) * cout_g]
        hid = sg @ w1[g * d_g:(g + 1) * d_g].T + b1[g * d_g:(g + 1) * d_g]
        if "bn1.weight" in sd:
            hid = bn(hid, {kk: v[g * d_g:(g + 1) * d_g] for kk, v in sd.items() if kk.startswith("bn1.") and v.dim()},
                     "bn1")
        hid = torch.relu(hid)
        logit = hid @ w2[g * o_g:(g + 1) * o_g].T + b2[g * o_g:(g + 1) * o_g]   # [B, R*C/K], split-major
        logit = logit.reshape(b, radix, cout_g)
        a = torch.softmax(logit, dim=1) if radix > 1 else torch.sigmoid(logit)
        for r in range(radix):
            weights[:, r, g * cout_g:(g + 1) * cout_g] = a[:, r]
            out[:, g * cout_g:(g + 1) * cout_g] += a[:, r, :, None, None] * u[r, :, g * cout_g:(g + 1) * cout_g]
    return out, weights


@pytest.mark.parametrize("params", [{}, {"radix": 4, "cardinality": 2}, {"radix": 1, "cardinality": 2, "norm": False},
                                    {"radix": 2, "cardinality": 4, "kernel_size": 1}])
def test_matches_loop_reference(params):
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64)
    resolved = MECH.validate({"x": tuple(x.shape)}, params)
    module = runtime.build_module(MECH, {"x": x.shape}, resolved, seed=5, dtype=torch.float64)
    randomise_batchnorm(module, 0, mean_scale=0.2)
    want_out, want_a = reference(x, module.state_dict(), resolved["radix"], resolved["cardinality"])
    got = runtime.forward(MECH, module, {"x": x})
    torch.testing.assert_close(got["output"], want_out, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(got["split_weights"], want_a, rtol=1e-11, atol=1e-12)


def test_split_weights_sum_to_one_over_radix():
    out = runtime.run(MECH, {"x": torch.randn(2, 16, 4, 4)}, {"radix": 4, "cardinality": 2}, seed=0)
    torch.testing.assert_close(out["split_weights"].sum(dim=1), torch.ones(2, 16))


def test_rejects_indivisible_channels():
    with pytest.raises(Exception, match="divisible"):
        MECH.validate({"x": (1, 18, 4, 4)}, {"radix": 4})


@pytest.mark.parametrize("radix,card", [(2, 1), (4, 2), (1, 1)])
def test_conforms_to_timm_splitattn(timm_layers, radix, card):
    c = 64
    params = MECH.validate({"x": (2, c, 7, 7)}, {"radix": radix, "cardinality": card})
    ours = runtime.build_module(MECH, {"x": (2, c, 7, 7)}, params, seed=4)
    randomise_batchnorm(ours, 0, mean_scale=0.2)
    theirs = timm_layers.SplitAttn(c, radix=radix, groups=card, norm_layer=torch.nn.BatchNorm2d).eval()
    assert theirs.fc1.out_channels == ours.fc1.out_channels     # same attention width d
    theirs.load_state_dict(ours.state_dict())                    # identical parameter names and layouts
    x = torch.randn(2, c, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["output"], theirs(x), rtol=1e-5, atol=1e-6)
