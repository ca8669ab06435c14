"""CBAM against a NumPy transcription of Woo et al. Eqs. 1-3 (explicit 7x7 correlation loop) and timm's CbamModule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("cbam")


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def conv2d_same(x, w):
    """x [B, Cin, H, W], w [Cout, Cin, k, k]: zero-padded cross-correlation by explicit shifts."""
    k = w.shape[-1]
    p = k // 2
    b, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((b, w.shape[0], h, wd))
    for di in range(k):
        for dj in range(k):
            out += np.einsum("bchw,oc->bohw", xp[:, :, di:di + h, dj:dj + wd], w[:, :, di, dj])
    return out


def numpy_cbam(x, sd, eps=1e-5):
    def mlp(v):
        h = v @ sd["mlp_fc1.weight"].T + sd.get("mlp_fc1.bias", 0.0)
        return np.maximum(h, 0.0) @ sd["mlp_fc2.weight"].T + sd.get("mlp_fc2.bias", 0.0)
    mc = sig(mlp(x.mean(axis=(2, 3))) + mlp(x.max(axis=(2, 3))))
    f1 = x * mc[:, :, None, None]
    pooled = np.stack([f1.mean(axis=1), f1.max(axis=1)], axis=1)
    s = conv2d_same(pooled, sd["spatial_conv.weight"])
    if "spatial_bn.weight" in sd:
        s = (s - sd["spatial_bn.running_mean"]) / np.sqrt(sd["spatial_bn.running_var"] + eps) \
            * sd["spatial_bn.weight"] + sd["spatial_bn.bias"]
    ms = sig(s)
    return f1 * ms, mc, ms


@pytest.mark.parametrize("params", [{}, {"spatial_norm": True, "mlp_bias": True, "reduction": 4, "spatial_kernel": 3}])
def test_matches_numpy_equations(params):
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64)
    resolved = MECH.validate({"x": tuple(x.shape)}, params)
    module = runtime.build_module(MECH, {"x": x.shape}, resolved, seed=11, dtype=torch.float64)
    if resolved["spatial_norm"]:   # non-trivial BatchNorm statistics
        with torch.no_grad():
            module.spatial_bn.running_mean.fill_(0.3)
            module.spatial_bn.running_var.fill_(2.0)
            module.spatial_bn.weight.fill_(1.5)
            module.spatial_bn.bias.fill_(-0.2)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want = numpy_cbam(x.numpy(), sd)
    got = runtime.forward(MECH, module, {"x": x})
    for name, w in zip(("output", "channel_weights", "spatial_map"), want, strict=True):
        np.testing.assert_allclose(got[name].numpy(), w, rtol=1e-11, atol=1e-12)


def test_gates_in_unit_interval_and_output_is_composition():
    x = torch.randn(2, 16, 4, 5)
    out = runtime.run(MECH, {"x": x}, {"reduction": 4}, seed=0)
    for k in ("channel_weights", "spatial_map"):
        assert ((out[k] > 0) & (out[k] < 1)).all()
    torch.testing.assert_close(out["output"], x * out["channel_weights"][:, :, None, None] * out["spatial_map"])


def test_conforms_to_timm_cbammodule(timm_layers):
    c, r = 64, 16
    params = MECH.validate({"x": (2, c, 9, 9)}, {"spatial_norm": True})
    ours = runtime.build_module(MECH, {"x": (2, c, 9, 9)}, params, seed=4)
    with torch.no_grad():
        ours.spatial_bn.running_mean.fill_(0.1)
        ours.spatial_bn.running_var.fill_(1.7)
        ours.spatial_bn.weight.fill_(0.8)
        ours.spatial_bn.bias.fill_(0.05)
    import timm.layers.cbam as timm_cbam  # after the fixture has made timm importable

    theirs = timm_cbam.CbamModule(c, rd_channels=c // r).eval()
    sd = ours.state_dict()
    theirs.load_state_dict({
        "channel.fc1.weight": sd["mlp_fc1.weight"][:, :, None, None],
        "channel.fc2.weight": sd["mlp_fc2.weight"][:, :, None, None],
        "spatial.conv.conv.weight": sd["spatial_conv.weight"],
        "spatial.conv.bn.weight": sd["spatial_bn.weight"], "spatial.conv.bn.bias": sd["spatial_bn.bias"],
        "spatial.conv.bn.running_mean": sd["spatial_bn.running_mean"],
        "spatial.conv.bn.running_var": sd["spatial_bn.running_var"],
        "spatial.conv.bn.num_batches_tracked": sd["spatial_bn.num_batches_tracked"],
    })
    x = torch.randn(2, c, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["output"], theirs(x), rtol=1e-5, atol=1e-6)
