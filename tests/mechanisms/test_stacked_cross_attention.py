"""SCAN against a NumPy transcription of Lee et al. (ECCV 2018) Sec. 3.1/3.2 written with explicit loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("stacked-cross-attention")


def cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8)


def numpy_scan(f, e, w, b, direction, l1, pooling, l2, clip="relu", l2_normalise=False):
    v = f @ w.T + b
    if l2_normalise:
        v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-8)
        e = e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-8)
    r, n = v.shape[0], e.shape[0]
    s = np.array([[cos(v[i], e[j]) for j in range(n)] for i in range(r)])
    s = np.maximum(s, 0.0) if clip == "relu" else np.where(s > 0, s, 0.1 * s)
    if direction == "t-i":
        s = s / (np.sqrt((s ** 2).sum(1, keepdims=True)) + 1e-8)
        att, out, rel = np.zeros((n, r)), np.zeros((n, e.shape[1])), np.zeros(n)
        for j in range(n):
            a = np.exp(l1 * s[:, j])
            att[j] = a / a.sum()
            out[j] = (att[j][:, None] * v).sum(0)
            rel[j] = cos(e[j], out[j])
    else:
        s = s / (np.sqrt((s ** 2).sum(0, keepdims=True)) + 1e-8)
        att, out, rel = np.zeros((r, n)), np.zeros((r, e.shape[1])), np.zeros(r)
        for i in range(r):
            a = np.exp(l1 * s[i])
            att[i] = a / a.sum()
            out[i] = (att[i][:, None] * e).sum(0)
            rel[i] = cos(v[i], out[i])
    sim = rel.mean() if pooling == "avg" else np.log(np.exp(l2 * rel).sum()) / l2
    return out, att, rel, sim


def _against_numpy(regions, words, params: dict, **switches):
    """The mechanism with ``params`` (and the switches) against numpy_scan on each batch item; returns its
    outputs and numpy's attended vectors."""
    resolved = MECH.resolve_params({**params, **switches})
    module = runtime.build_module(MECH, {"regions": regions.shape, "words": words.shape}, resolved, seed=2,
                                  dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    got = runtime.forward(MECH, module, {"regions": regions, "words": words})
    outs = []
    for bi in range(regions.shape[0]):
        out, att, rel, sim = numpy_scan(regions[bi].numpy(), words[bi].numpy(), sd["fc.weight"], sd["fc.bias"],
                                        resolved["direction"], resolved["lambda_1"], resolved["pooling"], 6.0,
                                        **switches)
        np.testing.assert_allclose(got["output"][bi].numpy(), out, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got["attention"][bi].numpy(), att, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got["relevance"][bi].numpy(), rel, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got["similarity"][bi].item(), sim, rtol=1e-10)
        outs.append(out)
    return got, outs


@pytest.mark.parametrize("direction,pooling,l1", [("t-i", "avg", 9.0), ("i-t", "lse", 4.0)])
def test_matches_numpy_equations(direction, pooling, l1):
    regions, words = torch.randn(2, 5, 10, dtype=torch.float64), torch.randn(2, 4, 6, dtype=torch.float64)
    _against_numpy(regions, words, {"direction": direction, "pooling": pooling, "lambda_1": l1})


@pytest.mark.parametrize("direction", ["t-i", "i-t"])
def test_released_clip_and_normalisation_match_numpy(direction):
    regions, words = torch.randn(2, 5, 10, dtype=torch.float64), torch.randn(2, 4, 6, dtype=torch.float64) * 3
    got, outs = _against_numpy(regions, words, {"direction": direction}, clip="leaky_relu", l2_normalise=True)
    for out in outs:  # attended vectors are convex combinations of unit vectors
        assert (np.linalg.norm(out, axis=1) <= 1 + 1e-12).all()
    paper = runtime.forward(MECH, runtime.build_module(MECH, {"regions": regions.shape, "words": words.shape},
                                                       MECH.resolve_params({"direction": direction}), seed=2,
                                                       dtype=torch.float64), {"regions": regions, "words": words})
    assert not torch.allclose(paper["attention"], got["attention"])


def test_shapes_per_direction_and_rows_sum_to_one():
    inputs = {"regions": torch.randn(2, 6, 12), "words": torch.randn(2, 3, 8)}
    ti = runtime.run(MECH, inputs, {"direction": "t-i"})
    it = runtime.run(MECH, inputs, {"direction": "i-t"})
    assert ti["output"].shape == (2, 3, 8) and ti["attention"].shape == (2, 3, 6)
    assert it["output"].shape == (2, 6, 8) and it["attention"].shape == (2, 6, 3)
    torch.testing.assert_close(ti["attention"].sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(it["attention"].sum(-1), torch.ones(2, 6))
    assert (ti["similarity"].abs() <= 1 + 1e-6).all()
