"""TSA against a NumPy transcription that applies the three attention maps in ONE joint contraction
Y[c,i,j] = sum A_l[c,c'] A_y[i,i'] A_x[j,j'] V[c',i',j'] (rather than the module's successive mode
products), plus the order-independence property the paper relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("spatial-spectral-attention")


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _conv1x1(x, sd, name):
    return np.einsum("oc,bchw->bohw", sd[f"{name}.weight"][:, :, 0, 0], x) + sd[f"{name}.bias"][None, :, None, None]


def numpy_tsa(x, sd, heads, mask):
    b, c, h, w = x.shape
    feat = _conv1x1(x, sd, "preproc")
    qx, kx = _conv1x1(feat, sd, "query_x"), _conv1x1(feat, sd, "key_x")
    qy, ky = _conv1x1(feat, sd, "query_y"), _conv1x1(feat, sd, "key_y")
    ql = _conv1x1(feat, sd, "query_spectral").reshape(b, heads, c, h * w)
    kl = _conv1x1(feat, sd, "key_spectral").reshape(b, heads, c, h * w)
    v = _conv1x1(feat, sd, "value").reshape(b, heads, c, h, w)
    a_x = _softmax(np.einsum("bmij,bmik->bmjk", qx, kx) / math.sqrt(h))
    a_y = _softmax(np.einsum("bmij,bmkj->bmik", qy, ky) / math.sqrt(w))
    a_l = _softmax(np.einsum("bmcn,bmdn->bmcd", ql, kl) / math.sqrt(h * w))
    if mask:
        m = np.array([[(math.cos(math.pi * (j - i) / (c - 1)) + 1) / 2 for j in range(c)] for i in range(c)])
        a_l = (a_l + m) / math.sqrt(1.1)
    y = np.einsum("bmcd,bmik,bmjl,bmdkl->bmcij", a_l, a_y, a_x, v)
    y = y.reshape(b, heads * c, h, w).transpose(0, 2, 3, 1) @ sd["aggregation.weight"].T + sd["aggregation.bias"]
    return y.transpose(0, 3, 1, 2) + feat, a_x, a_y, a_l


@pytest.mark.parametrize("heads,mask", [(1, False), (2, True)])
def test_matches_numpy_joint_contraction(heads, mask):
    x = torch.randn(2, 5, 4, 7, dtype=torch.float64)
    p = MECH.validate({"x": x.shape}, {"heads": heads, "spectral_mask": mask})
    module = runtime.build_module(MECH, {"x": x.shape}, p, seed=2, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, a_x, a_y, a_l = numpy_tsa(x.numpy(), sd, heads, mask)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["attention_x"].numpy(), a_x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["attention_y"].numpy(), a_y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["attention_spectral"].numpy(), a_l, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-12)


def test_maps_are_row_stochastic_and_mode_products_commute():
    x = torch.randn(2, 6, 5, 9)
    out = runtime.run(MECH, {"x": x}, {"heads": 2}, seed=0)
    for name, n in (("attention_x", 9), ("attention_y", 5), ("attention_spectral", 6)):
        torch.testing.assert_close(out[name].sum(-1), torch.ones(2, 2, n))
    v = torch.randn(2, 2, 6, 5, 9)
    a_x, a_y, a_l = out["attention_x"], out["attention_y"], out["attention_spectral"]
    one = torch.einsum("bmcd,bmdij->bmcij", a_l, a_y[:, :, None] @ v @ a_x[:, :, None].transpose(-2, -1))
    other = a_y[:, :, None] @ torch.einsum("bmcd,bmdij->bmcij", a_l, v @ a_x[:, :, None].transpose(-2, -1))
    torch.testing.assert_close(one, other)


def test_benchmark_input_runs():
    out = runtime.run(MECH, {"x": torch.randn(8, 256, 28, 28)}, seed=0)
    assert out["attention_spectral"].shape == (8, 1, 256, 256)
