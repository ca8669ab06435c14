"""Region attention (after RANet): pixels grouped into regions from a semantic score map, region
descriptors pooled away from boundaries, attention between regions, region context added back to pixels.

Shen, Ji, Li, Wang, Lin, "RANet: Region Attention Network for Semantic Segmentation", NeurIPS 2020
(region construction block, RCB; region interaction block, RIB).

Shapes: x [B, C, H, W] -> output [B, C, H, W]; region_attention [B, K, K]; regions [B, H, W] (int64 region
index of every pixel); boundary [B, 1, H, W]; pooling_weights [B, H, W]. K = number of regions.
- RCB (condensed): semantic score map S = Conv1x1(x) [K channels], boundary score map
  b = sigmoid(Conv3x3(x)) [1 channel]. Pixel i belongs to region k(i) = argmax_k S_k(i). Representative
  weight of pixel j in its region: w_j = (1 - b_j) softmax_k(S(j))_{k(j)} (confident, non-boundary pixels
  dominate), and the region descriptor r_k = sum_{j in R_k} w_j x_j / sum_{j in R_k} w_j.
- RIB: a_kl = softmax_l(theta(r_k)^T phi(r_l) / sqrt(d)) over the non-empty regions l;
  r^_k = r_k + sum_l a_kl g(r_l).
- Output: y_i = x_i + r^_{k(i)} (each pixel receives its region's updated context).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class RegionAttention(nn.Module):
    def __init__(self, channels: int, regions: int = 19, key_channels: int = 0):
        super().__init__()
        d = key_channels or max(1, channels // 2)
        self.semantic = nn.Conv2d(channels, regions, 1)            # semantic score map
        self.boundary = nn.Conv2d(channels, 1, 3, padding=1)       # boundary score map
        self.theta = nn.Linear(channels, d)
        self.phi = nn.Linear(channels, d)
        self.g = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        scores = self.semantic(x)                                          # [B, K, H, W]
        k = scores.shape[1]
        boundary = torch.sigmoid(self.boundary(x))                         # [B, 1, H, W]
        regions = scores.argmax(dim=1)                                     # k(i)  [B, H, W]
        conf = scores.softmax(dim=1).gather(1, regions[:, None])[:, 0]     # softmax score of own region
        weight = (1 - boundary[:, 0]) * conf                               # w_j  [B, H, W]
        member = nn.functional.one_hot(regions.flatten(1), k).to(x.dtype)  # [B, HW, K]
        wm = member * weight.flatten(1)[:, :, None]
        mass = wm.sum(1)                                                   # [B, K]
        r = (wm.transpose(1, 2) @ x.flatten(2).transpose(1, 2)) / mass.clamp(min=torch.finfo(x.dtype).tiny)[..., None]
        present = member.sum(1) > 0                                        # non-empty regions [B, K]
        logits = self.theta(r) @ self.phi(r).transpose(1, 2) / math.sqrt(self.theta.out_features)
        logits = logits.masked_fill(~present[:, None, :], float("-inf"))
        attn = logits.softmax(-1)                                          # a_kl
        r_hat = r + attn @ self.g(r)                                       # [B, K, C]
        context = r_hat.gather(1, regions.flatten(1)[:, :, None].expand(-1, -1, c))   # r^_{k(i)}  [B, HW, C]
        out = x + context.transpose(1, 2).reshape(b, c, h, w)
        return {"output": out, "region_attention": attn, "regions": regions, "boundary": boundary,
                "pooling_weights": weight}


MECHANISM = Mechanism(
    slug="region-attention",
    title="Region attention (RANet-style, condensed): regions from a semantic score map, boundary-aware "
          "region pooling, softmax attention between region descriptors, context broadcast back to pixels",
    reference="Shen et al., NeurIPS 2020 (RANet), region construction block and region interaction block; "
              "condensed form of the technique record's formula",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "x + the updated descriptor of each pixel's region"),
             OutputSpec("region_attention", ("B", "K", "K"), "a_kl between regions (rows sum to 1; empty regions "
                        "get 0 as keys)", attention=True),
             OutputSpec("regions", ("B", "H", "W"), "region index k(i) of every pixel", attention=True),
             OutputSpec("boundary", ("B", "1", "H", "W"), "boundary score map in (0, 1)", attention=True),
             OutputSpec("pooling_weights", ("B", "H", "W"), "representative weight w_j of each pixel in its "
                        "region", attention=True)),
    hyperparams=(
        HyperParam("regions", "int", 19, "number of regions K = channels of the semantic score map (19 "
                   "Cityscapes classes)", 1, 1024),
        HyperParam("key_channels", "int", 0, "width d of theta / phi; 0 means C // 2", 0, 8192),
    ),
    build=lambda shapes, p: RegionAttention(shapes["x"][1], p["regions"], p["key_channels"]),
    example_shapes={"x": (2, 16, 12, 12)},
    test_shapes=({"x": (1, 3, 5, 7)}, {"x": (3, 32, 20, 9)}),
    notes="Uncertain identification and simplified. The technique record identifies the entry with RANet "
          "(NeurIPS 2020) but could not confirm it, and we could not read the paper's exact equations. RANet's "
          "RCB builds, for every pixel, a contextual region by following the boundary map and selects "
          "representative pixels by their semantic scores; here regions are the argmax classes of the "
          "semantic score map and representatives are soft (boundary- and confidence-weighted pooling). The "
          "RIB is scaled dot-product attention between region descriptors with a residual. The score maps are "
          "unsupervised here (RANet supervises them with boundary and segmentation labels).",
)
