"""NLSA (Mei et al., CVPR 2021) against a dense NumPy transcription: explicit LSH codes, ranks after
sorting, an N x N mask "key in the query's chunk or an adjacent one", masked softmax per round and
the Eq. 9 fusion of rounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("non-local-sparse-attention")


def conv1x1(x, w, b):
    return np.einsum("oc,bchw->bohw", w[:, :, 0, 0], x) + b[None, :, None, None]


def numpy_nlsa(x, sd, chunk):
    b, c, h, w = x.shape
    n = h * w
    q = conv1x1(x, sd["match.weight"], sd["match.bias"]).reshape(b, -1, n).transpose(0, 2, 1)
    v = conv1x1(x, sd["assembly.weight"], sd["assembly.bias"]).reshape(b, c, n).transpose(0, 2, 1)
    k = q / np.linalg.norm(q, axis=-1, keepdims=True)
    k_eff = min(chunk, n)
    nc = -(-n // k_eff)
    ys, lses, codes_all, atts = [], [], [], []
    for rot in sd["rotations"]:
        xr = q @ rot
        codes = np.argmax(np.concatenate([xr, -xr], axis=-1), axis=-1)       # [B, N]
        y = np.zeros((b, n, c))
        lse = np.zeros((b, n))
        att = np.zeros((b, n, n))
        for bb in range(b):
            order = np.argsort(codes[bb], kind="stable")                       # ties by position
            rank = np.empty(n, dtype=int)
            rank[order] = np.arange(n)
            ch = rank // k_eff
            for i in range(n):
                allowed = [j for j in range(n) if (ch[j] - ch[i]) % nc in (0, 1, nc - 1)]
                s = np.array([q[bb, i] @ k[bb, j] for j in allowed])
                lse[bb, i] = np.log(np.exp(s).sum())
                a = np.exp(s - lse[bb, i])
                att[bb, i, allowed] = a
                y[bb, i] = a @ v[bb, allowed]
        ys.append(y)
        lses.append(lse)
        codes_all.append(codes)
        atts.append(att)
    z = np.exp(np.stack(lses, 1))
    wts = z / z.sum(1, keepdims=True)                                          # Eq. 9
    y = sum(wts[:, r, :, None] * ys[r] for r in range(len(ys)))
    att = sum(wts[:, r, :, None] * atts[r] for r in range(len(ys)))
    return x + y.transpose(0, 2, 1).reshape(b, c, h, w), att, np.stack(codes_all, 1), wts


@pytest.mark.parametrize("shape,chunk,hashes", [((2, 8, 5, 5), 4, 3), ((1, 8, 4, 3), 6, 2), ((1, 8, 3, 3), 5, 1),
                                                ((1, 4, 2, 3), 144, 2)])
def test_matches_dense_numpy_transcription(shape, chunk, hashes):
    x = torch.randn(*shape, dtype=torch.float64)
    params = MECH.resolve_params({"reduction": 2, "chunk_size": chunk, "n_hashes": hashes})
    module = runtime.build_module(MECH, {"x": shape}, params, seed=7, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want, att, codes, wts = numpy_nlsa(x.numpy(), sd, chunk)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_array_equal(got["buckets"].numpy(), codes)
    np.testing.assert_allclose(got["round_weights"].numpy(), wts, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got["attention"].numpy(), att, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-10, atol=1e-12)
    fast = runtime.forward(MECH, module, {"x": x}, need_weights=False)
    np.testing.assert_allclose(fast["output"].numpy(), want, rtol=1e-10, atol=1e-12)


def test_attention_is_sparse_rows_sum_to_one():
    x = torch.randn(2, 16, 8, 8)
    out = runtime.run(MECH, {"x": x}, {"chunk_size": 8, "n_hashes": 2}, seed=0)
    a = out["attention"]
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 64))
    # each query sees at most 3 chunks of 8 in each of the 2 rounds
    assert ((a > 0).sum(-1) <= 2 * 3 * 8).all()
    assert ((a > 0).sum(-1) < 64).any()
    assert out["buckets"].max() < 8 and out["buckets"].min() >= 0   # m = 8 buckets for N // k = 8


def test_one_chunk_is_full_softmax_attention():
    """With k >= N every position is in the one chunk: NLSA reduces to dense attention (any round)."""
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)
    module = runtime.build_module(MECH, {"x": x.shape}, {"reduction": 2, "chunk_size": 144, "n_hashes": 3},
                                  seed=1, dtype=torch.float64)
    q = module.match(x).flatten(2).transpose(1, 2)
    full = torch.softmax(q @ torch.nn.functional.normalize(q, dim=-1).transpose(1, 2), dim=-1)
    got = runtime.forward(MECH, module, {"x": x})
    torch.testing.assert_close(got["attention"], full.detach())
