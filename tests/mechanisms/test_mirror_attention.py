"""Mirror attention (Jin et al., ECCV 2020) against a loop-based NumPy transcription: line sides and
band, explicit Gaussian blur, per-pixel reflection with hand-written bilinear interpolation, direct
convolutions, residual and region pooling. Plus a geometric property of the reflection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("mirror-attention")


def conv2d(x, w):
    """x [Cin, H, W], w [Cout, Cin, k, k], zero padding k // 2."""
    cout, cin, k, _ = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    h, wd = x.shape[1:]
    out = np.zeros((cout, h, wd))
    for i in range(h):
        for j in range(wd):
            out[:, i, j] = np.einsum("ocab,cab->o", w, xp[:, i:i + k, j:j + k])
    return out


def bilinear(img, u, v):
    """img [C, H, W] at real pixel position (u along W, v along H), zeros outside."""
    c, h, w = img.shape
    u0, v0 = int(np.floor(u)), int(np.floor(v))
    val = np.zeros(c)
    for du in (0, 1):
        for dv in (0, 1):
            uu, vv = u0 + du, v0 + dv
            wt = (1 - abs(u - uu)) * (1 - abs(v - vv))
            if 0 <= uu < w and 0 <= vv < h:
                val += wt * img[:, vv, uu]
    return val


def numpy_mirror(x, line, sd, ksize, sigma):
    b, c, h, w = x.shape
    outs, feats, atts, bands = [], [], [], []
    r = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    for n in range(b):
        x1, y1 = (line[n, 0] + 1) / 2 * (w - 1), (line[n, 1] + 1) / 2 * (h - 1)
        x2, y2 = (line[n, 2] + 1) / 2 * (w - 1), (line[n, 3] + 1) / 2 * (h - 1)
        a_, b_ = y2 - y1, x1 - x2
        c_ = -(a_ * x1 + b_ * y1)
        lv = np.array([[a_ * u + b_ * v + c_ for u in range(w)] for v in range(h)])
        s1, s2 = (lv < 0).astype(float), (lv > 0).astype(float)
        sp = np.pad(s1, 1, mode="edge")
        edge = np.array([[4 * sp[i + 1, j + 1] - sp[i, j + 1] - sp[i + 2, j + 1] - sp[i + 1, j] - sp[i + 1, j + 2]
                          for j in range(w)] for i in range(h)])
        lm = np.pad((edge != 0).astype(float), ksize // 2, mode="edge")
        band = np.array([[np.sum(g * lm[i:i + ksize, j:j + ksize]) for j in range(w)] for i in range(h)])
        band /= band.max() + 1e-9
        xb = x[n] * band
        xm = np.zeros_like(xb)
        for v in range(h):
            for u in range(w):
                d = (a_ * u + b_ * v + c_) / max(a_ * a_ + b_ * b_, 1e-12)
                xm[:, v, u] = bilinear(xb, u - 2 * a_ * d, v - 2 * b_ * d)
        z = np.maximum(conv2d(np.concatenate([xb, xm]), sd["conv1.weight"]), 0)
        z = np.maximum(conv2d(z, sd["conv2.weight"]), 0)
        att = 1 / (1 + np.exp(-conv2d(z, sd["conv3.weight"])))[0]
        y = xb + xb * att
        f = []
        for s in (s1, s2):
            reg = ((s * band) != 0).astype(float)
            f.append((y * reg).sum((1, 2)) / (reg.sum() + 1e-9))
        outs.append(y)
        feats.append(f)
        atts.append(att)
        bands.append(band)
    return np.array(outs), np.array(feats), np.array(atts), np.array(bands)


@pytest.mark.parametrize("shape,ksize,sigma", [((2, 3, 7, 6), 5, 5.0), ((1, 2, 5, 9), 3, 1.0), ((1, 2, 1, 4), 5, 2.0)])
def test_matches_numpy_transcription(shape, ksize, sigma):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    line = torch.rand(shape[0], 4, generator=g, dtype=torch.float64) * 2 - 1
    shapes = {"x": shape, "line": line.shape}
    module = runtime.build_module(MECH, shapes, {"blur_kernel": ksize, "blur_sigma": sigma}, seed=1,
                                  dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    y, f, a, band = numpy_mirror(x.numpy(), line.numpy(), sd, ksize, sigma)
    got = runtime.forward(MECH, module, {"x": x, "line": line})
    np.testing.assert_allclose(got["line_band"].numpy(), band, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["attention"].numpy(), a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["region_features"].numpy(), f, rtol=1e-10, atol=1e-12)


def test_vertical_axis_mirrors_columns():
    """For the vertical line through the centre of an even-width map (between two columns), the band
    and the reflection are left-right symmetric (column j <-> W-1-j); with symmetric features and
    left-right symmetric convs, A is symmetric and both sides pool to the same feature."""
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    x = x + x.flip(-1)
    line = torch.tensor([[0.0, -1.0, 0.0, 1.0]], dtype=torch.float64)
    module = runtime.build_module(MECH, {"x": x.shape, "line": line.shape}, MECH.defaults(), seed=0,
                                  dtype=torch.float64)
    with torch.no_grad():
        for conv in (module.conv1, module.conv2, module.conv3):
            conv.weight.copy_(conv.weight + conv.weight.flip(-1))
    out = runtime.forward(MECH, module, {"x": x, "line": line})
    torch.testing.assert_close(out["attention"], out["attention"].flip(-1))
    torch.testing.assert_close(out["region_features"][:, 0], out["region_features"][:, 1])
    assert ((out["attention"] > 0) & (out["attention"] < 1)).all()
