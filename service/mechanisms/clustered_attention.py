"""Clustered attention: queries grouped by K-means, one attention row per cluster centroid.

Vyas, Katharopoulos, Fleuret, "Fast Transformers with Clustered Attention", NeurIPS 2020 (Sec. 3.2).

Shapes: x [B, N, D] -> output [B, N, D]; cluster_attention [B, h, K, N]; clusters [B, h, N] (int64);
attention [B, h, N, N] (the cluster rows broadcast to their queries).
- Q = x W_Q, K = x W_K, V = x W_V, split into h heads of width D_k = D / h (standard multi-head layer).
- Clustering (Sec. 3.2.1): per head, the N queries are partitioned into K clusters with Lloyd's K-means
  (``iterations`` rounds); S in {0,1}^{N x K} is the one-hot assignment.
- Eq. 6: centroids Q^c_j = sum_i S_ij Q_i / sum_i S_ij.
- Eq. 7: A^c = softmax(Q^c K^T / sqrt(D_k))  (K x N, one row per cluster).
- Eq. 8: V^c = A^c V, and every query takes its cluster's value: V_hat = S V^c.
- Heads are concatenated and projected by W_O.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .heads import divisible, merge_heads, scaled_dot_product, split_heads


def kmeans(points: torch.Tensor, clusters: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's K-means on points [..., N, d]; returns (assignment [..., N] int64, centroids [..., K, d]).

    Deterministic initialisation: the points at indices floor(j N / K), j = 0..K-1. A cluster that
    loses all its points keeps its previous centroid."""
    n = points.shape[-2]
    init = torch.div(torch.arange(clusters, device=points.device) * n, clusters, rounding_mode="floor")
    centroids = points[..., init, :]
    assign = None
    for _ in range(iterations):
        dist = ((points[..., :, None, :] - centroids[..., None, :, :]) ** 2).sum(-1)   # [..., N, K]
        assign = dist.argmin(-1)
        onehot = nn.functional.one_hot(assign, clusters).to(points.dtype)             # S
        counts = onehot.sum(-2)                                                       # [..., K]
        sums = onehot.transpose(-2, -1) @ points                                      # [..., K, d]
        centroids = torch.where(counts[..., None] > 0, sums / counts.clamp(min=1)[..., None], centroids)  # Eq. 6
    return assign, centroids


class ClusteredAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 8, clusters: int = 100, iterations: int = 10):
        super().__init__()
        self.heads = heads
        self.clusters = clusters
        self.iterations = iterations
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, need_weights: bool = True) -> dict[str, torch.Tensor]:
        q = split_heads(self.q_proj(x), self.heads)                                 # [B, h, N, d]
        k = split_heads(self.k_proj(x), self.heads)
        v = split_heads(self.v_proj(x), self.heads)
        assign, centroids = kmeans(q, self.clusters, self.iterations)              # S, Q^c
        vc, ac = scaled_dot_product(centroids, k, v, need_weights=need_weights)     # Eqs. 7-8
        idx = assign[..., None].expand(-1, -1, -1, vc.shape[-1])
        v_hat = vc.gather(2, idx)                                                   # S V^c
        out = {"output": self.out_proj(merge_heads(v_hat))}
        if ac is not None:
            out["cluster_attention"] = ac
            out["clusters"] = assign
            out["attention"] = ac.gather(2, assign[..., None].expand(-1, -1, -1, ac.shape[-1]))
        return out


def _check(shapes, params):
    _, n, d = shapes["x"]
    problems = divisible("D", d, "heads", params["heads"])
    if params["clusters"] > n:
        problems.append(f"clusters={params['clusters']} exceeds the number of tokens N={n}")
    return problems


MECHANISM = Mechanism(
    slug="clustered-attention",
    title="Clustered attention layer: K-means over the queries of each head, attention computed once per "
          "centroid and shared by the cluster's queries",
    reference="Vyas et al., NeurIPS 2020, Sec. 3.2, Eqs. 6-8",
    inputs=(InputSpec("x", ("B", "N", "D"), "token sequence"),),
    outputs=(OutputSpec("output", ("B", "N", "D"), "layer output (after W_O)"),
             OutputSpec("cluster_attention", ("B", "heads", "K", "N"), "A^c: one softmax row per cluster centroid",
                        attention=True),
             OutputSpec("clusters", ("B", "heads", "N"), "cluster index of every query (the assignment S)",
                        attention=True),
             OutputSpec("attention", ("B", "heads", "N", "N"), "the approximate attention matrix S A^c "
                        "(each query's row is its cluster's row)", attention=True)),
    hyperparams=(
        HyperParam("heads", "int", 8, "attention heads", 1, 1024),
        HyperParam("clusters", "int", 100, "number of clusters C (100 in the paper's clustered-100)", 1, 100000),
        HyperParam("iterations", "int", 10, "Lloyd iterations of K-means (10 in the paper)", 1, 100),
    ),
    build=lambda shapes, p: ClusteredAttention(shapes["x"][2], p["heads"], p["clusters"], p["iterations"]),
    example_shapes={"x": (2, 128, 32)},
    test_shapes=({"x": (1, 100, 16)}, {"x": (3, 150, 24)}),
    constraints=("D divisible by heads", "clusters <= N"),
    check=_check,
    notes="Simplified clustering: the paper hashes the queries with B-bit locality-sensitive hashing and runs "
          "K-means with the Hamming distance on the codes, purely to make clustering cheap; here K-means runs "
          "directly on the queries with the Euclidean distance, from a deterministic initialisation (queries "
          "at evenly spaced indices). Eqs. 6-8 are unchanged. The improved variant (i-clustered, exact "
          "attention on each cluster's top-k keys) is not implemented. Projections carry biases.",
)
