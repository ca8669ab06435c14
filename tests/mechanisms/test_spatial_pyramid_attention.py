"""SPAN against a per-pixel NumPy loop over the nine dilated neighbours, and properties of the local softmax."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("spatial-pyramid-attention")


def numpy_span(x, sd, levels, base):
    b, c, h, w = x.shape
    maps = np.zeros((b, levels, 9, h, w))
    for lvl in range(levels):
        d = base ** lvl
        wq, wk, wv = (sd[f"blocks.{lvl}.{n}.weight"][:, :, 0, 0] for n in ("query", "key", "value"))
        pos = sd[f"blocks.{lvl}.position"]
        y = x.copy()
        for n in range(b):
            for i in range(h):
                for j in range(w):
                    q = wq @ x[n, :, i, j]
                    scores, vals, idx = [], [], []
                    for o, (di, dj) in enumerate([(a, bb) for a in (-1, 0, 1) for bb in (-1, 0, 1)]):
                        ii, jj = i + di * d, j + dj * d
                        if 0 <= ii < h and 0 <= jj < w:
                            scores.append(q @ (wk @ x[n, :, ii, jj] + pos[o]) / math.sqrt(c))
                            vals.append(wv @ x[n, :, ii, jj])
                            idx.append(o)
                    e = np.exp(np.array(scores) - max(scores))
                    a = e / e.sum()
                    y[n, :, i, j] = x[n, :, i, j] + sum(ai * vi for ai, vi in zip(a, vals, strict=True))
                    maps[n, lvl, idx, i, j] = a
        x = y
    return x, maps


@pytest.mark.parametrize("shape,params", [((2, 8, 5, 4), {"levels": 3, "base": 2}), ((1, 6, 6, 7), {})])
def test_matches_numpy_loop(shape, params):
    resolved = MECH.validate({"x": shape}, params)
    module = runtime.build_module(MECH, {"x": shape}, resolved, seed=17, dtype=torch.float64)
    x = torch.randn(*shape, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want_out, want_a = numpy_span(x.numpy(), sd, resolved["levels"], resolved["base"])
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["attention"].numpy(), want_a, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), want_out, rtol=1e-11, atol=1e-12)


def test_local_softmax_sums_to_one_and_far_levels_see_only_the_centre():
    out = runtime.run(MECH, {"x": torch.randn(2, 8, 6, 6)}, seed=0)       # dilations 1, 3, 9, 27, 81
    a = out["attention"]
    torch.testing.assert_close(a.sum(dim=2), torch.ones(2, 5, 6, 6))
    assert (a[:, 2:, 4] == 1).all()       # d >= 9 > 6: every neighbour but the centre lies outside
    assert (a[:, 0, 0, 0, :] == 0).all()  # top-row positions have no upper-left neighbour at d = 1


def test_translation_equivariant_in_the_interior():
    """Same weights everywhere: shifting the image by the dilation shifts interior outputs of a 1-level SPAN."""
    resolved = MECH.validate({"x": (1, 8, 9, 9)}, {"levels": 1})
    m = runtime.build_module(MECH, {"x": (1, 8, 9, 9)}, resolved, seed=2, dtype=torch.float64)
    x = torch.randn(1, 8, 9, 10, dtype=torch.float64)
    a = runtime.forward(MECH, m, {"x": x[..., :9]})["output"]
    b = runtime.forward(MECH, m, {"x": x[..., 1:]})["output"]
    torch.testing.assert_close(a[..., 2:8], b[..., 1:7])
