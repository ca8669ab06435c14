"""Non-Local Sparse Attention (NLSA) with spherical LSH buckets, chunked attention and multi-round fusion.

Mei, Fan, Zhou, "Image Super-Resolution with Non-Local Sparse Attention", CVPR 2021.

Shapes: x [B, C, H, W] -> output [B, C, H, W]; buckets [B, R, N] (hash codes, int64, N = H*W);
round_weights [B, R, N]; attention [B, N, N] (the effective sparse attention, only when asked for).
- Embeddings (1x1 convs): match features theta(x) [B, N, C'] (C' = C // reduction) and assembly
  features g(x) [B, N, C]. (The released code's match embedding is a 3x3 convolution by default.)
- Spherical LSH (Sec. 3.2, Eq. 6): h(x) = argmax([R x~ ; -R x~]), x~ = x / ||x||, with a random
  Gaussian rotation R [C', m/2] per hashing round (m buckets).
- Sparse attention (Eqs. 7-8): positions are sorted by (bucket, position) and cut into chunks of
  size k; each query attends to the keys in its own chunk and the two adjacent chunks (cyclic), which
  approximates "same bucket" attention with a regular layout:
  y_i = sum_{j in delta_i} exp(f(x_i, x_j)) / sum_{j' in delta_i} exp(f(x_i, x_j')) g(x_j),
  f(x_i, x_j) = theta(x_i)^T theta(x_j) / ||theta(x_j)|| (keys l2-normalised as in the released code).
- Multi-round fusion (Eq. 9): y_i = sum_r Z_i^(r) / sum_r' Z_i^(r') y_i^(r), Z_i^(r) the softmax
  normaliser of round r.
- Output: x + y (the residual of the NLSA module).
Number of buckets m = max(2, min(n + n mod 2, 128)) with n = N // k, as in the released code.
Simplifications: the rotations are a buffer drawn at build time from the seed (the code redraws them
at every forward), an incomplete last chunk is padded with masked slots (the code repeats
entries), positions within a bucket keep their order (the code's sort is not stable), and adjacent
chunks are de-duplicated when there are fewer than three chunks (the code always attends to three).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


def num_buckets(n_positions: int, chunk_size: int) -> int:
    n = n_positions // chunk_size
    return max(2, min(n + n % 2, 128))


class NonLocalSparseAttention(nn.Module):
    def __init__(self, channels: int, positions: int, reduction: int = 4, chunk_size: int = 144,
                 n_hashes: int = 4):
        super().__init__()
        inner = channels // reduction
        self.chunk_size = min(chunk_size, positions)
        self.match = nn.Conv2d(channels, inner, 1)       # theta
        self.assembly = nn.Conv2d(channels, channels, 1)  # g
        m = num_buckets(positions, chunk_size)
        self.register_buffer("rotations", torch.randn(n_hashes, inner, m // 2))

    def _round(self, q, k, v, rot, need_weights):
        b, n, _ = q.shape
        xr = q @ rot                                                            # [B, N, m/2]
        codes = torch.cat([xr, -xr], dim=-1).argmax(dim=-1)                     # Eq. 6
        pos = torch.arange(n, device=q.device)
        order = torch.argsort(codes * n + pos, dim=-1)                          # sort by (bucket, position)
        cs = self.chunk_size
        nc = -(-n // cs)
        pad = nc * cs - n

        def chunks(t):                                                          # sorted, padded, chunked
            t = torch.gather(t, 1, order[..., None].expand(-1, -1, t.shape[-1]))
            return F.pad(t, (0, 0, 0, pad)).reshape(b, nc, cs, t.shape[-1])

        qc, kc, vc = chunks(q), chunks(k), chunks(v)
        valid = (torch.arange(nc * cs, device=q.device) < n).reshape(nc, cs)
        slot = torch.arange(nc * cs, device=q.device).reshape(nc, cs)
        offsets = sorted({o % nc for o in (-1, 0, 1)})
        adj = lambda t, d: torch.cat([torch.roll(t, -o, dims=d) for o in offsets], dim=d + 1)  # noqa: E731
        ka, va = adj(kc, 1), adj(vc, 1)                                         # [B, nc, |o| cs, .]
        va_valid, slot_adj = adj(valid, 0), adj(slot, 0)                        # [nc, |o| cs]
        scores = (qc @ ka.transpose(-1, -2)).masked_fill(~va_valid[:, None, :], float("-inf"))
        lse = torch.logsumexp(scores, dim=-1, keepdim=True)                     # log Z
        a = torch.exp(scores - lse)                                             # Eq. 7
        y = (a @ va).reshape(b, nc * cs, -1)[:, :n]                             # Eq. 8 (sorted order)
        inv = torch.argsort(order, dim=-1)
        y = torch.gather(y, 1, inv[..., None].expand(-1, -1, y.shape[-1]))
        lse = torch.gather(lse.reshape(b, nc * cs)[:, :n], 1, inv)
        dense = None
        if need_weights:                                                        # scatter to [B, N, N]
            order_p = F.pad(order, (0, pad), value=n)                            # padded slots -> dummy n
            qi = order_p[:, :, None].expand(-1, -1, a.shape[-1]).reshape(b, nc, cs, -1)
            kj = order_p[:, slot_adj.reshape(-1)].reshape(b, nc, 1, -1).expand(-1, -1, cs, -1)
            dense = a.new_zeros(b, (n + 1) * (n + 1))
            dense.scatter_add_(1, (qi * (n + 1) + kj).reshape(b, -1), a.reshape(b, -1))
            dense = dense.reshape(b, n + 1, n + 1)[:, :n, :n]
        return y, lse, codes, dense

    def forward(self, x: torch.Tensor, need_weights: bool = True) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        q = self.match(x).flatten(2).transpose(1, 2)                            # theta(x): [B, N, C']
        k = F.normalize(q, dim=-1)
        v = self.assembly(x).flatten(2).transpose(1, 2)                         # g(x): [B, N, C]
        rounds = [self._round(q, k, v, rot, need_weights) for rot in self.rotations]
        wts = torch.softmax(torch.stack([r[1] for r in rounds], dim=1), dim=1)  # Eq. 9: Z^(r) / sum Z
        y = sum(wts[:, i, :, None] * r[0] for i, r in enumerate(rounds))
        out = {"output": x + y.transpose(1, 2).reshape(b, c, h, w)}
        if need_weights:
            out["attention"] = sum(wts[:, i, :, None] * r[3] for i, r in enumerate(rounds))
            out["buckets"] = torch.stack([r[2] for r in rounds], dim=1)
            out["round_weights"] = wts
        return out


def _check(shapes, params):
    c = shapes["x"][1]
    return [] if c // params["reduction"] >= 1 else [
        f"C={c} is smaller than reduction={params['reduction']}: the match embedding would be empty"]


MECHANISM = Mechanism(
    slug="non-local-sparse-attention",
    title="NLSA module: spherical-LSH buckets, chunked attention to own and adjacent chunks, "
          "multi-round fusion, residual",
    reference="Mei et al., CVPR 2021, Sec. 3 (Eqs. 6-9)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "x + fused sparse non-local response"),
             OutputSpec("attention", ("B", "N", "N"), "effective attention over positions N = H*W "
                        "(round-fused; zero outside the chunks)", attention=True),
             OutputSpec("buckets", ("B", "R", "N"), "hash bucket of each position in each round", attention=True),
             OutputSpec("round_weights", ("B", "R", "N"), "Z^(r) / sum_r Z^(r) per position", attention=True)),
    hyperparams=(
        HyperParam("reduction", "int", 4, "match-embedding channels C' = C // reduction", 1, 1024),
        HyperParam("chunk_size", "int", 144, "attention chunk size k (paper: 144)", 1, 100000),
        HyperParam("n_hashes", "int", 4, "hashing rounds R (paper: 4)", 1, 16),
    ),
    build=lambda shapes, p: NonLocalSparseAttention(shapes["x"][1], shapes["x"][2] * shapes["x"][3],
                                                    p["reduction"], p["chunk_size"], p["n_hashes"]),
    example_shapes={"x": (2, 16, 6, 6)},
    test_shapes=({"x": (1, 8, 5, 3)}, {"x": (3, 4, 1, 1)}),
    constraints=("C // reduction >= 1",),
    check=_check,
    notes="Rotations are a buffer drawn from the build seed (deterministic); last chunk padded with "
          "masked slots rather than repeated entries. The number of buckets depends on H*W.",
)
