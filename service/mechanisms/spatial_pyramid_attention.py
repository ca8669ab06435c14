"""Spatial Pyramid Attention (SPAN): a pyramid of local self-attention blocks with growing dilation.

Hu, Zhang, Jiang, Chaudhuri, Yang, Nevatia, "SPAN: Spatial Pyramid Attention Network for Image
Manipulation Localization", ECCV 2020, Sec. 3.2 (local self-attention block, position projection,
pyramid).

Shapes: x [B, C, H, W] -> output [B, C, H, W], attention [B, L, 9, H, W]  (L pyramid levels).
One block with dilation distance d, at every position p:
- neighbourhood N_d(p) = {p + d*delta : delta in {-1, 0, 1}^2}: nine positions d pixels apart;
- a_{p,delta} = softmax_delta( (W_q x_p) . (W_k x_{p+d delta} + P e_delta) / sqrt(C) ), where P e_delta is
  the position projection of the offset delta (a learned C-vector per offset), so the block knows which
  of the nine relative positions each neighbour occupies;
- y_p = x_p + sum_delta a_{p,delta} W_v x_{p+d delta}   (residual).
Pyramid: X^{(l+1)} = SA_{d_l}(X^{(l)}), d_l = base^(l-1) for l = 1..L (1, 3, 9, 27, 81 by default).
Neighbours that fall outside the image are left out of the softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec

OFFSETS = tuple((di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1))   # e_delta order: row-major 3x3


class LocalSelfAttention(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.query = nn.Conv2d(channels, channels, 1, bias=False)
        self.key = nn.Conv2d(channels, channels, 1, bias=False)
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.position = nn.Parameter(torch.randn(len(OFFSETS), channels) / math.sqrt(channels))  # P e_delta

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        d = min(self.dilation, max(h, w))   # beyond the image size every off-centre neighbour is outside anyway
        q = self.query(x).flatten(2)                                               # [B, C, HW]
        # the nine dilated neighbours of every position (zero outside the image), row-major offsets
        k = F.unfold(self.key(x), 3, dilation=d, padding=d).view(b, c, 9, h * w)
        v = F.unfold(self.value(x), 3, dilation=d, padding=d).view(b, c, 9, h * w)
        logits = (q[:, :, None] * k).sum(dim=1) + torch.einsum("bcp,oc->bop", q, self.position)  # [B, 9, HW]
        ones = torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device)
        inside = F.unfold(ones, 3, dilation=d, padding=d).view(1, 9, h * w) > 0     # neighbour within the image
        a = torch.softmax((logits / math.sqrt(c)).masked_fill(~inside, float("-inf")), dim=1)  # [B, 9, HW]
        y = x + (a[:, None] * v).sum(dim=2).view(b, c, h, w)
        return y, a.view(b, 9, h, w)


class SpatialPyramidAttention(nn.Module):
    def __init__(self, channels: int, levels: int = 5, base: int = 3):
        super().__init__()
        self.blocks = nn.ModuleList(LocalSelfAttention(channels, base ** level) for level in range(levels))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = []
        for block in self.blocks:
            x, a = block(x)
            maps.append(a)
        return {"output": x, "attention": torch.stack(maps, dim=1)}


MECHANISM = Mechanism(
    slug="spatial-pyramid-attention",
    title="SPAN pyramid of local self-attention blocks (3x3 neighbourhoods at dilations 1, 3, 9, ...) "
          "with position projection",
    reference="Hu et al., ECCV 2020 (SPAN), Sec. 3.2",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map (SPAN uses ManTra-Net features)"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "features after the L attention blocks"),
             OutputSpec("attention", ("B", "L", "9", "H", "W"),
                        "per level, weights of the nine neighbours (row-major 3x3 offsets) of each position; "
                        "they sum to 1 over the nine, neighbours outside the image get 0", attention=True)),
    hyperparams=(
        HyperParam("levels", "int", 5, "number L of pyramid levels", 1, 8),
        HyperParam("base", "int", 3, "dilation of level l is base^(l-1)", 1, 8),
    ),
    build=lambda shapes, p: SpatialPyramidAttention(shapes["x"][1], p["levels"], p["base"]),
    example_shapes={"x": (2, 16, 7, 7)},
    test_shapes=({"x": (1, 8, 5, 3)}, {"x": (3, 32, 1, 1)}),
    notes="Reconstruction from the paper's description: the position projection is a learned vector per "
          "neighbour offset added to the keys, queries/keys/values are bias-free 1x1 projections and the "
          "softmax is scaled by 1/sqrt(C); the exact form in the paper may differ in these details. The "
          "feature extractor and the decision module of SPAN are not part of the block.",
)
