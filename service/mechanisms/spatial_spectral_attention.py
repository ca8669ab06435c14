"""Spatial-spectral self-attention (TSA): separate x-axis, y-axis and spectral attention maps applied to
the value tensor mode by mode.

Meng, Ma, Yuan, "End-to-End Low Cost Compressive Spectral Imaging with Spatial-Spectral Self-Attention",
ECCV 2020 (Sec. 3.3, the TSA module).

Shapes: x [B, C, H, W] (C spectral channels) -> output [B, C, H, W]; attention_x [B, h, W, W];
attention_y [B, h, H, H]; attention_spectral [B, h, C, C].
- feat = Conv1x1(x) (pre-processing); V = Conv1x1(feat), C channels per head.
- Spatial correlation, one axis at a time: per head, a one-channel query map and key map (1 x 1
  convolutions of feat); column j's descriptor is that map's column (H values), row i's is its row
  (W values). A_x = softmax(Q_x K_x^T / sqrt(H)) [W x W]; A_y = softmax(Q_y K_y^T / sqrt(W)) [H x H].
- Spectral correlation: per head, C query / key maps (1 x 1 convolutions of feat); channel c's descriptor
  is its flattened H W map. A_lambda = softmax(Q_l K_l^T / sqrt(HW)) [C x C]; optionally the spectral
  smoothness prior (A_lambda + M) / sqrt(1.1), M_cc' = (cos(pi (c' - c) / (C - 1)) + 1) / 2.
- Order-independent aggregation: Y = V x_1 A_y x_2 A_x x_3 A_lambda (mode products on rows, columns and
  channels commute).
- Heads are concatenated and mixed by a linear layer over channels; output = Y_agg + feat.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


def spectral_smoothness_mask(c: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    orig = (torch.cos(torch.linspace(-1, 1, 2 * c - 1, dtype=dtype, device=device) * math.pi) + 1) / 2
    idx = (c - 1) - torch.arange(c, device=device)[:, None] + torch.arange(c, device=device)[None, :]
    return orig[idx]


class SpatialSpectralAttention(nn.Module):
    def __init__(self, channels: int, heads: int = 1, spectral_mask: bool = False):
        super().__init__()
        self.heads = heads
        self.spectral_mask = spectral_mask
        self.preproc = nn.Conv2d(channels, channels, 1)
        self.query_x = nn.Conv2d(channels, heads, 1)
        self.key_x = nn.Conv2d(channels, heads, 1)
        self.query_y = nn.Conv2d(channels, heads, 1)
        self.key_y = nn.Conv2d(channels, heads, 1)
        self.query_spectral = nn.Conv2d(channels, heads * channels, 1)
        self.key_spectral = nn.Conv2d(channels, heads * channels, 1)
        self.value = nn.Conv2d(channels, heads * channels, 1)
        self.aggregation = nn.Linear(heads * channels, channels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        nh = self.heads
        feat = self.preproc(x)
        qx, kx = self.query_x(feat), self.key_x(feat)                            # [B, h, H, W]
        qy, ky = self.query_y(feat), self.key_y(feat)
        a_x = (qx.transpose(-2, -1) @ kx / math.sqrt(h)).softmax(-1)             # columns: [B, h, W, W]
        a_y = (qy @ ky.transpose(-2, -1) / math.sqrt(w)).softmax(-1)             # rows:    [B, h, H, H]
        ql = self.query_spectral(feat).reshape(b, nh, c, h * w)
        kl = self.key_spectral(feat).reshape(b, nh, c, h * w)
        a_l = (ql @ kl.transpose(-2, -1) / math.sqrt(h * w)).softmax(-1)         # [B, h, C, C]
        if self.spectral_mask:
            a_l = (a_l + spectral_smoothness_mask(c, x.dtype, x.device)) / math.sqrt(1.1)
        v = self.value(feat).reshape(b, nh, c, h, w)
        y = a_y[:, :, None] @ v                                                  # x_1 A_y (rows)
        y = y @ a_x[:, :, None].transpose(-2, -1)                                # x_2 A_x (columns)
        y = (a_l @ y.reshape(b, nh, c, h * w)).reshape(b, nh, c, h, w)           # x_3 A_lambda (channels)
        y = self.aggregation(y.reshape(b, nh * c, h, w).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return {"output": y + feat, "attention_x": a_x, "attention_y": a_y, "attention_spectral": a_l}


MECHANISM = Mechanism(
    slug="spatial-spectral-attention",
    title="TSA spatial-spectral self-attention: x-axis, y-axis and spectral attention maps applied to the "
          "values by order-independent mode products",
    reference="Meng, Ma, Yuan, ECCV 2020, Sec. 3.3 (TSA module: spatial correlation, spectral correlation, "
              "order-independent aggregation)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "(hyper)spectral feature map, C spectral channels"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "aggregated attention output + pre-processed features"),
             OutputSpec("attention_x", ("B", "heads", "W", "W"), "A_x: attention between columns", attention=True),
             OutputSpec("attention_y", ("B", "heads", "H", "H"), "A_y: attention between rows", attention=True),
             OutputSpec("attention_spectral", ("B", "heads", "C", "C"), "A_lambda: attention between spectral "
                        "channels", attention=True)),
    hyperparams=(
        HyperParam("heads", "int", 1, "number of heads", 1, 64),
        HyperParam("spectral_mask", "bool", False, "add the spectral smoothness prior to A_lambda"),
    ),
    build=lambda shapes, p: SpatialSpectralAttention(shapes["x"][1], p["heads"], p["spectral_mask"]),
    example_shapes={"x": (2, 8, 6, 10)},
    test_shapes=({"x": (1, 1, 5, 3)}, {"x": (3, 28, 16, 16)}),
    notes="Simplified feature generators: the authors' code derives the axis descriptors with strided "
          "convolutions + batch norm + fully connected layers sized to a fixed input resolution, and the "
          "spectral descriptors likewise; here they are 1 x 1 convolutions whose raw rows / columns / channel "
          "maps are the descriptors, so any H, W, C works. The optional down/up-sampling of the values and "
          "batch norm are omitted; the residual gamma is fixed at 1 as in the released default. The attention "
          "equations and the mode-product aggregation are as in the paper.",
)
