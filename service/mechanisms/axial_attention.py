"""Position-sensitive axial attention (height axis, then width axis).

Wang, Zhu, Green, Adam, Yuille, Chen, "Axial-DeepLab: Stand-Alone Axial-Attention for Panoptic
Segmentation", ECCV 2020. (The row/column factorisation itself is from Ho et al., "Axial Attention
in Multidimensional Transformers", arXiv:1912.12180, 2019.)

Shapes: x [B, C, H, W] -> output [B, C, H, W]; height_attention [B, heads, W, H, H];
width_attention [B, heads, H, W, W]. d = C / heads.
- Eq. 4 (position-sensitive self-attention along one axis, span = the whole axis, i.e. the global
  setting): for output position o and positions p on its column (or row),
    y_o = sum_p softmax_p(q_o^T k_p + q_o^T r^q_{p-o} + k_p^T r^k_{p-o}) (v_p + r^v_{p-o}),
  q = W_Q x, k = W_K x, v = W_V x (1x1 projections, per head d channels), r^q, r^k, r^v learned
  relative position embeddings [2L - 1, d] per axis (shared by the heads), L = H or W.
- Eq. 5 / Fig. 2: an axial-attention layer is Attn_W(Attn_H(x)): height-axis attention followed by
  width-axis attention, each with its own weights; heads are concatenated (d * heads = C).
As in Eq. 4 there is no 1/sqrt(d) scaling and no residual (in Axial-ResNet the pair replaces the 3x3
conv of a bottleneck, whose 1x1 convs and residual are not part of this block). The released code
differs from Eq. 4 in three ways, none reproduced here: it batch-normalises the q/k/v projection, the
three logit terms and the two output terms; its queries and keys have half the value width; and it
looks the relative embeddings up at o - p instead of p - o.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class PositionSensitiveAxialAttention(nn.Module):
    """Eq. 4 along the last-but-one axis of a [..., L, C] tensor."""

    def __init__(self, channels: int, length: int, heads: int):
        super().__init__()
        self.heads = heads
        d = channels // heads
        self.qkv = nn.Linear(channels, 3 * channels, bias=False)          # W_Q, W_K, W_V
        self.rel_q = nn.Parameter(torch.randn(2 * length - 1, d) * d ** -0.5)
        self.rel_k = nn.Parameter(torch.randn(2 * length - 1, d) * d ** -0.5)
        self.rel_v = nn.Parameter(torch.randn(2 * length - 1, d) * d ** -0.5)
        pos = torch.arange(length)
        self.register_buffer("rel_index", pos[None, :] - pos[:, None] + length - 1, persistent=False)  # [o, p]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        *lead, n, c = x.shape
        q, k, v = self.qkv(x).reshape(*lead, n, 3, self.heads, c // self.heads).movedim(-3, 0)  # [..., L, h, d]
        rq, rk, rv = (r[self.rel_index] for r in (self.rel_q, self.rel_k, self.rel_v))          # [L(o), L(p), d]
        logits = (torch.einsum("...ohd,...phd->...hop", q, k)
                  + torch.einsum("...ohd,opd->...hop", q, rq)
                  + torch.einsum("...phd,opd->...hop", k, rk))
        a = torch.softmax(logits, dim=-1)                                                         # [..., h, L, L]
        y = torch.einsum("...hop,...phd->...ohd", a, v) + torch.einsum("...hop,opd->...ohd", a, rv)
        return y.reshape(*lead, n, c), a


class AxialAttention(nn.Module):
    def __init__(self, channels: int, height: int, width: int, heads: int = 8):
        super().__init__()
        self.height = PositionSensitiveAxialAttention(channels, height, heads)
        self.width = PositionSensitiveAxialAttention(channels, width, heads)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        t, a_h = self.height(x.permute(0, 3, 2, 1))                       # columns: [B, W, H, C]
        t, a_w = self.width(t.transpose(1, 2))                             # rows: [B, H, W, C]
        return {"output": t.permute(0, 3, 1, 2),
                "height_attention": a_h.transpose(1, 2),                   # [B, heads, W, H, H]
                "width_attention": a_w.transpose(1, 2)}                    # [B, heads, H, W, W]


def _check(shapes, params):
    c = shapes["x"][1]
    return [] if c % params["heads"] == 0 else [f"C={c} is not divisible by heads={params['heads']}"]


MECHANISM = Mechanism(
    slug="axial-attention",
    title="Position-sensitive axial-attention layer: height-axis then width-axis multi-head attention "
          "with relative positional terms on queries, keys and values (global span)",
    reference="Wang et al. (Axial-DeepLab), ECCV 2020, Eqs. 4-5; axial factorisation of Ho et al. 2019",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "Attn_W(Attn_H(x))"),
             OutputSpec("height_attention", ("B", "heads", "W", "H", "H"),
                        "softmax weights within each column (query o, key p)", attention=True),
             OutputSpec("width_attention", ("B", "heads", "H", "W", "W"),
                        "softmax weights within each row (query o, key p)", attention=True)),
    hyperparams=(HyperParam("heads", "int", 8, "attention heads (C divisible by heads; paper: 8)", 1, 64),),
    build=lambda shapes, p: AxialAttention(shapes["x"][1], shapes["x"][2], shapes["x"][3], p["heads"]),
    example_shapes={"x": (2, 16, 5, 6)},
    test_shapes=({"x": (1, 8, 7, 3)}, {"x": (3, 24, 1, 1)}),
    constraints=("C divisible by heads",),
    check=_check,
    notes="Relative embeddings cover the whole axis, so their shapes depend on H and W. No residual, "
          "no 1/sqrt(d) and no BatchNorm (as in Eq. 4); the released code's BNs are omitted.",
)
