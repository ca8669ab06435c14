"""Efficient attention (linear-complexity attention by reordering the matrix product).

Shen, Zhang, Zhao, Yi, Li, "Efficient Attention: Attention with Linear Complexities", WACV 2021
(Sec. 3.2-3.3).

Shapes: x [B, C, H, W] -> output [B, C, H, W]; key_attention and query_weights [B, h, Dk, H, W];
context [B, h, Dk, Dv] (Dk, Dv: key / value channels per head).
- Q, K, V: 1 x 1 convolutions of x to d_k, d_k and d_v channels, split into h heads; n = HW positions.
- Eq. (efficient attention): E(Q, K, V) = rho_q(Q) (rho_k(K)^T V), with softmax normalisation:
  rho_q = softmax over the d_k features of each position (each row of Q),
  rho_k = softmax over the n positions of each feature (each column of K).
  rho_k(K)^T V [d_k x d_v] are the global context vectors; each column of rho_k(K) is a global
  attention map over positions, and rho_q(Q) mixes those maps per position.
- The heads are concatenated, re-projected by a 1 x 1 convolution to C channels and added to x
  (the efficient attention module's residual connection).
Cost O(n d_k d_v) instead of O(n^2 d) for dot-product attention.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .heads import divisible


class EfficientAttention(nn.Module):
    def __init__(self, channels: int, key_channels: int = 0, value_channels: int = 0, heads: int = 1):
        super().__init__()
        self.dk = key_channels or channels
        self.dv = value_channels or channels
        self.heads = heads
        self.keys = nn.Conv2d(channels, self.dk, 1)
        self.queries = nn.Conv2d(channels, self.dk, 1)
        self.values = nn.Conv2d(channels, self.dv, 1)
        self.reprojection = nn.Conv2d(self.dv, channels, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        nh = self.heads
        k = self.keys(x).reshape(b, nh, self.dk // nh, h * w)
        q = self.queries(x).reshape(b, nh, self.dk // nh, h * w)
        v = self.values(x).reshape(b, nh, self.dv // nh, h * w)
        rho_k = k.softmax(dim=-1)                         # over positions (columns of K)
        rho_q = q.softmax(dim=-2)                         # over features (rows of Q)
        context = rho_k @ v.transpose(-2, -1)             # rho_k(K)^T V   [B, h, dk, dv]
        attended = context.transpose(-2, -1) @ rho_q      # (rho_q(Q) context)^T  [B, h, dv, n]
        out = self.reprojection(attended.reshape(b, self.dv, h, w)) + x
        return {"output": out,
                "key_attention": rho_k.reshape(b, nh, -1, h, w),
                "query_weights": rho_q.reshape(b, nh, -1, h, w),
                "context": context}


def _check(shapes, params):
    c = shapes["x"][1]
    dk, dv = params["key_channels"] or c, params["value_channels"] or c
    return divisible("key_channels", dk, "heads", params["heads"]) + \
        divisible("value_channels", dv, "heads", params["heads"])


MECHANISM = Mechanism(
    slug="efficient-attention",
    title="Efficient attention module: softmax-normalised keys (over positions) and queries (over features), "
          "global context rho_k(K)^T V, re-projection and residual",
    reference="Shen et al., WACV 2021, Sec. 3.2 (efficient attention, softmax normalisation) and Sec. 3.3 "
              "(interpretation as global context vectors)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "x + reprojection(E(Q, K, V))"),
             OutputSpec("key_attention", ("B", "heads", "Dk", "H", "W"),
                        "rho_k(K): one global attention map per key channel (each sums to 1 over H x W)",
                        attention=True),
             OutputSpec("query_weights", ("B", "heads", "Dk", "H", "W"),
                        "rho_q(Q): per position, weights over the head's key channels (sum to 1 over Dk)",
                        attention=True),
             OutputSpec("context", ("B", "heads", "Dk", "Dv"), "global context vectors rho_k(K)^T V",
                        attention=True)),
    hyperparams=(
        HyperParam("key_channels", "int", 0, "d_k, total key/query channels; 0 means C", 0, 8192),
        HyperParam("value_channels", "int", 0, "d_v, total value channels; 0 means C", 0, 8192),
        HyperParam("heads", "int", 1, "number of heads; must divide d_k and d_v", 1, 1024),
    ),
    build=lambda shapes, p: EfficientAttention(shapes["x"][1], p["key_channels"], p["value_channels"], p["heads"]),
    example_shapes={"x": (2, 16, 8, 8)},
    test_shapes=({"x": (1, 3, 5, 7)}, {"x": (3, 32, 1, 12)}),
    constraints=("key_channels (or C) divisible by heads", "value_channels (or C) divisible by heads"),
    check=_check,
    notes="Softmax normalisation variant (the paper also describes scaling normalisation, rho = 1/sqrt(n), "
          "which makes it equal to dot-product attention with that scaling). Projections are 1 x 1 "
          "convolutions with biases as in the authors' code. The paper's experiments vary d_k, d_v and the "
          "head count; the defaults here (d_k = d_v = C, one head) are a neutral choice.",
)
