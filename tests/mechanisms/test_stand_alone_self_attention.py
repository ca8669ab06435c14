"""Stand-alone self-attention against a pixel-by-pixel NumPy transcription of Ramachandran et al. Eq. 3
(explicit neighbourhood loops and per-head matrices taken from the grouped projections)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime
from service.mechanisms.base import MechanismInputError

MECH = registry.get("stand-alone-self-attention")


def numpy_sasa(x, sd, k, heads):
    b, c, h, w = x.shape
    dh = c // heads
    p = k // 2
    y = np.zeros_like(x)
    att = np.zeros((b, heads, h, w, k * k))
    for n in range(heads):
        grp = slice(n * dh, (n + 1) * dh)
        wq, wk, wv = (sd[f"w_{t}.weight"][grp, :, 0, 0] for t in "qkv")      # [dh, dh] acting on group n
        xs = x[:, grp]
        for bi in range(b):
            for i in range(h):
                for j in range(w):
                    q = wq @ xs[bi, :, i, j]
                    logits, vals, slots = [], [], []
                    for a in range(i - p, i + p + 1):
                        for bb in range(j - p, j + p + 1):
                            if not (0 <= a < h and 0 <= bb < w):
                                continue
                            r = np.concatenate([sd["rel_row"][n, a - i + p], sd["rel_col"][n, bb - j + p]])
                            logits.append(q @ (wk @ xs[bi, :, a, bb]) + q @ r)
                            vals.append(wv @ xs[bi, :, a, bb])
                            slots.append((a - i + p) * k + (bb - j + p))
                    e = np.exp(np.array(logits) - max(logits))
                    wts = e / e.sum()
                    y[bi, grp, i, j] = wts @ np.array(vals)
                    att[bi, n, i, j, slots] = wts
    return y, att


@pytest.mark.parametrize("k,heads", [(3, 2), (5, 1)])
def test_matches_numpy_equations(k, heads):
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    p = MECH.validate({"x": x.shape}, {"kernel_size": k, "heads": heads})
    module = runtime.build_module(MECH, {"x": x.shape}, p, seed=3, dtype=torch.float64)
    sd = {n: v.numpy() for n, v in module.state_dict().items()}
    want, want_att = numpy_sasa(x.numpy(), sd, k, heads)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["attention"].numpy(), want_att, rtol=1e-10, atol=1e-12)


def test_rows_sum_to_one_borders_and_translation_equivariance():
    x = torch.randn(1, 16, 12, 12)
    out = runtime.run(MECH, {"x": x}, {"kernel_size": 3, "heads": 2}, seed=0)
    att = out["attention"]
    torch.testing.assert_close(att.sum(-1), torch.ones(1, 2, 12, 12))
    assert (att[:, :, 0, :, :3] == 0).all() and (att[:, :, :, -1, 2::3] == 0).all()
    # away from the borders the layer is translation equivariant
    shifted = runtime.run(MECH, {"x": torch.roll(x, (2, 3), (2, 3))}, {"kernel_size": 3, "heads": 2}, seed=0)
    torch.testing.assert_close(shifted["output"][..., 4:-1, 5:-1], out["output"][..., 2:-3, 2:-4])


def test_benchmark_input_and_constraints():
    out = runtime.run(MECH, {"x": torch.randn(8, 256, 28, 28)}, seed=0)
    assert out["attention"].shape == (8, 8, 28, 28, 49)
    with pytest.raises(MechanismInputError, match="2 \\* heads"):
        MECH.validate({"x": (1, 24, 8, 8)})
    with pytest.raises(MechanismInputError, match="odd"):
        MECH.validate({"x": (1, 32, 8, 8)}, {"kernel_size": 4})
