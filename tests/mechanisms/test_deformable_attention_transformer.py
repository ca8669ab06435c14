"""DAT block against an independent NumPy transcription of Xia et al. Eqs. 7-10 worked in pixel
coordinates (explicit depthwise convolution, explicit bilinear sampling with zero padding, explicit
bilinear look-up of the relative-position table), rather than the module's normalised grids and
grid_sample calls."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime
from service.mechanisms.base import MechanismInputError

MECH = registry.get("deformable-attention-transformer")
ERF = np.vectorize(math.erf)


def _ln(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b


def _gelu(x):
    return 0.5 * x * (1 + ERF(x / math.sqrt(2)))


def _bilinear(img, y, x):
    """img [C, H, W] sampled at pixel coordinates (y, x); pixels outside the map count as 0."""
    c, h, w = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    out = np.zeros(c)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def numpy_dat(x, sd, head_dim, groups, r, s, k):
    b, c, h, w = x.shape
    heads, gc = c // head_dim, c // groups
    hk, wk = h // r, w // r
    ns = hk * wk
    a = "attn."
    xt = x.transpose(0, 2, 3, 1)                                                     # [B, H, W, C]
    y = _ln(xt, sd["norm1.norm.weight"], sd["norm1.norm.bias"])                     # LN(z)
    q = y @ sd[a + "proj_q.weight"].T + sd[a + "proj_q.bias"]                       # [B, H, W, C]
    out = np.zeros_like(xt)
    att = np.zeros((b, heads, h * w, ns))
    locs = np.zeros((b, groups, hk, wk, 2))
    pad = k // 2
    for bi in range(b):
        sampled = np.zeros((ns, c))
        for g in range(groups):
            ch = slice(g * gc, (g + 1) * gc)
            qg = np.pad(q[bi, :, :, ch], ((pad, pad), (pad, pad), (0, 0)))
            for i in range(hk):
                for j in range(wk):
                    win = qg[i * r:i * r + k, j * r:j * r + k]                     # [k, k, gc]
                    dw = np.einsum("abc,cab->c", win, sd[a + "offset_dw.weight"][:, 0]) + sd[a + "offset_dw.bias"]
                    hid = _gelu(_ln(dw, sd[a + "offset_norm.norm.weight"], sd[a + "offset_norm.norm.bias"]))
                    off = s * np.tanh(sd[a + "offset_pw.weight"][:, :, 0, 0] @ hid)   # grid steps (dy, dx)
                    py = (i + 0.5) * r - 0.5 + off[0] * r                          # reference + offset, pixels
                    px = (j + 0.5) * r - 0.5 + off[1] * r
                    locs[bi, g, i, j] = (py, px)
                    sampled[i * wk + j, ch] = _bilinear(y[bi].transpose(2, 0, 1)[ch], py, px)
        kk = sampled @ sd[a + "proj_k.weight"].T + sd[a + "proj_k.bias"]
        vv = sampled @ sd[a + "proj_v.weight"].T + sd[a + "proj_v.bias"]
        table = sd[a + "rpe_table"]                                                  # [heads, 2H-1, 2W-1]
        zq = np.zeros((h * w, c))
        for m in range(heads):
            g = m // (heads // groups)
            hs = slice(m * head_dim, (m + 1) * head_dim)
            for p in range(h * w):
                qi, qj = divmod(p, w)
                logits = np.zeros(ns)
                for n in range(ns):
                    ky, kx = locs[bi, g].reshape(ns, 2)[n]
                    bias = _bilinear(table[m:m + 1], qi - ky + h - 1, qj - kx + w - 1)[0]
                    logits[n] = q[bi, qi, qj, hs] @ kk[n, hs] / math.sqrt(head_dim) + bias
                e = np.exp(logits - logits.max())
                att[bi, m, p] = e / e.sum()
                zq[p, hs] = att[bi, m, p] @ vv[:, hs]
        out[bi] = (zq @ sd[a + "proj_out.weight"].T + sd[a + "proj_out.bias"]).reshape(h, w, c)
    z1 = xt + out
    z2 = z1 + _gelu(_ln(z1, sd["norm2.weight"], sd["norm2.bias"]) @ sd["fc1.weight"].T + sd["fc1.bias"]) \
        @ sd["fc2.weight"].T + sd["fc2.bias"]
    return z2.transpose(0, 3, 1, 2), att, locs


@pytest.mark.parametrize("params", [
    {"head_dim": 4, "groups": 2, "stride": 1, "offset_range": 2.0, "kernel_size": 3},
    {"head_dim": 2, "groups": 2, "stride": 2, "offset_range": 1.5, "kernel_size": 5},
])
def test_matches_numpy_equations(params):
    x = torch.randn(2, 8, 6, 4, dtype=torch.float64)
    p = MECH.validate({"x": x.shape}, params)
    module = runtime.build_module(MECH, {"x": x.shape}, p, seed=6, dtype=torch.float64)
    with torch.no_grad():   # larger offsets so that some points leave the map and hit the zero padding
        module.attn.offset_pw.weight.mul_(20.0)
        module.attn.rpe_table.normal_(generator=torch.Generator().manual_seed(0))
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, want_att, want_locs = numpy_dat(x.numpy(), sd, p["head_dim"], p["groups"], p["stride"],
                                          p["offset_range"], p["kernel_size"])
    assert (want_locs < -0.5).any() or (want_locs[..., 0] > 5.5).any() or (want_locs[..., 1] > 3.5).any()
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["sampled_locations"].numpy(), want_locs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["attention"].numpy(), want_att, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-9, atol=1e-10)


def test_zero_offsets_sample_the_grid_and_bias_reads_table_entries():
    """With theta_offset = 0 and r = 1 the keys are the pixels themselves (plain global attention with a
    relative position bias read exactly from the table)."""
    x = torch.randn(1, 64, 4, 5, dtype=torch.float64)
    module = runtime.build_module(MECH, {"x": x.shape}, MECH.defaults(), seed=1, dtype=torch.float64)
    with torch.no_grad():
        module.attn.offset_pw.weight.zero_()
    out = module(x)
    grid = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij"), -1).double()
    for g in range(2):
        torch.testing.assert_close(out["sampled_locations"][0, g], grid)
    y = module.norm1(x)
    q = module.attn.proj_q(y.flatten(2).transpose(1, 2))
    k = module.attn.proj_k(y.flatten(2).transpose(1, 2))
    coords = grid.reshape(-1, 2).long()
    rel = coords[:, None] - coords[None]                                  # query - key, pixels
    bias = module.attn.rpe_table[:, rel[..., 0] + 3, rel[..., 1] + 4]    # [h, HW, HW]
    logits = torch.einsum("nhd,mhd->hnm", q.reshape(20, 2, 32), k.reshape(20, 2, 32)) / math.sqrt(32) + bias
    torch.testing.assert_close(out["attention"][0], logits.softmax(-1))


def test_rows_sum_to_one_benchmark_input_and_constraints():
    out = runtime.run(MECH, {"x": torch.randn(8, 256, 28, 28)}, {"stride": 2}, seed=0)
    assert out["attention"].shape == (8, 8, 784, 196)
    torch.testing.assert_close(out["attention"].sum(-1), torch.ones(8, 8, 784))
    assert out["sampled_locations"].shape == (8, 2, 14, 14, 2)
    with pytest.raises(MechanismInputError, match="groups"):
        MECH.validate({"x": (1, 96, 8, 8)})          # 3 heads, 2 groups
    with pytest.raises(MechanismInputError, match="stride"):
        MECH.validate({"x": (1, 64, 9, 8)}, {"stride": 2})
    with pytest.raises(MechanismInputError, match="odd"):
        MECH.validate({"x": (1, 64, 8, 8)}, {"kernel_size": 4})
