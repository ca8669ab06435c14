"""Stand-alone local self-attention layer with relative position embeddings.

Ramachandran, Parmar, Vaswani, Bello, Levskaya, Shlens, "Stand-Alone Self-Attention in Vision Models",
NeurIPS 2019 (Sec. 2.2).

Shapes: x [B, C, H, W] -> output [B, C, H, W]; attention [B, h, H, W, k^2] (weights of each pixel over
its k x k memory block, offsets in raster order (a - i, b - j) = (-k//2, -k//2) ... (+k//2, +k//2)).
- Memory block N_k(i, j): the k x k neighbourhood centred on (i, j).
- Eq. 3: y_ij = sum_{(a,b) in N_k(i,j)} softmax_ab(q_ij^T k_ab + q_ij^T r_{a-i,b-j}) v_ab,
  q_ij = W_Q x_ij, k_ab = W_K x_ab, v_ab = W_V x_ab.
- Relative embedding: r_{a-i,b-j} = concat(r^row_{a-i}, r^col_{b-j}), each half of the width.
- Multi-head: x_ij is split depthwise into h groups of C/h channels; each head has its own W_Q, W_K, W_V
  acting on its group (grouped 1 x 1 projections) and its own row/column embeddings; outputs are
  concatenated.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class StandAloneSelfAttention(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 7, heads: int = 8):
        super().__init__()
        self.k = kernel_size
        self.heads = heads
        dh = channels // heads
        self.w_q = nn.Conv2d(channels, channels, 1, groups=heads, bias=False)  # W_Q per head
        self.w_k = nn.Conv2d(channels, channels, 1, groups=heads, bias=False)  # W_K per head
        self.w_v = nn.Conv2d(channels, channels, 1, groups=heads, bias=False)  # W_V per head
        self.rel_row = nn.Parameter(torch.randn(heads, kernel_size, dh // 2))  # r^row_{a-i}
        self.rel_col = nn.Parameter(torch.randn(heads, kernel_size, dh // 2))  # r^col_{b-j}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        nh, k, p = self.heads, self.k, self.k // 2
        dh = c // nh
        q = self.w_q(x).reshape(b, nh, dh, h, w)
        kp = F.pad(self.w_k(x), (p, p, p, p)).reshape(b, nh, dh, h + 2 * p, w + 2 * p)
        vp = F.pad(self.w_v(x), (p, p, p, p)).reshape(b, nh, dh, h + 2 * p, w + 2 * p)
        inside = F.pad(x.new_ones(1, 1, h, w), (p, p, p, p))[0, 0]             # 1 where the key is in the map
        logits, valid = [], []
        for a in range(k):
            for bb in range(k):
                r = torch.cat([self.rel_row[:, a], self.rel_col[:, bb]], dim=-1)  # r_{a-i,b-j} [heads, dh]
                key = kp[..., a:a + h, bb:bb + w] + r[None, :, :, None, None]     # k_ab + r
                logits.append((q * key).sum(2))                                    # q^T k_ab + q^T r
                valid.append(inside[a:a + h, bb:bb + w] > 0)
        logits = torch.stack(logits, -1)                                          # [B, h, H, W, k^2]
        logits = logits.masked_fill(~torch.stack(valid, -1), float("-inf"))
        weights = logits.softmax(-1)                                              # softmax_ab
        out = torch.zeros_like(q)
        for o in range(k * k):
            a, bb = divmod(o, k)
            out = out + weights[..., o][:, :, None] * vp[..., a:a + h, bb:bb + w]
        return {"output": out.reshape(b, c, h, w), "attention": weights}


def _check(shapes, params):
    c = shapes["x"][1]
    problems = []
    if c % params["heads"] or (c // params["heads"]) % 2:
        problems.append(f"C={c} must be divisible by 2 * heads={2 * params['heads']} (each head's relative "
                        f"embedding is split into equal row and column halves)")
    if params["kernel_size"] % 2 == 0:
        problems.append(f"kernel_size={params['kernel_size']} must be odd (the block is centred on the pixel)")
    return problems


MECHANISM = Mechanism(
    slug="stand-alone-self-attention",
    title="Stand-alone local self-attention layer: k x k memory block, multi-head, relative row/column "
          "position embeddings",
    reference="Ramachandran et al., NeurIPS 2019, Sec. 2.2, Eq. 3 (with relative embeddings) and Eq. 2",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "attention output y (replaces a spatial convolution)"),
             OutputSpec("attention", ("B", "heads", "H", "W", "K2"),
                        "softmax weights of each pixel over its k x k neighbourhood (raster order of offsets); "
                        "positions outside the map get 0", attention=True)),
    hyperparams=(
        HyperParam("kernel_size", "int", 7, "spatial extent k of the memory block (7 in the paper)", 1, 31),
        HyperParam("heads", "int", 8, "attention heads N (8 in the paper)", 1, 1024),
    ),
    build=lambda shapes, p: StandAloneSelfAttention(shapes["x"][1], p["kernel_size"], p["heads"]),
    example_shapes={"x": (2, 32, 9, 9)},
    test_shapes=({"x": (1, 16, 5, 3)}, {"x": (3, 48, 8, 11)}),
    constraints=("C divisible by 2 * heads", "kernel_size odd"),
    check=_check,
    notes="Neighbours that fall outside the map are excluded from the softmax (the paper does not say how "
          "borders are handled; zero padding would add spurious zero keys). Relative embeddings are per "
          "head: each head's r is the concatenation of its own row and column halves. Projections are bias-free "
          "grouped 1 x 1 convolutions as described (features split depthwise into heads). The spatially-aware "
          "stem of the paper is not part of this layer.",
)
