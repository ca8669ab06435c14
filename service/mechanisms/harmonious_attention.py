"""Harmonious Attention (HA) module of HA-CNN: soft spatial x channel attention plus hard regional attention.

Li, Zhu, Gong, "Harmonious Attention Network for Person Re-Identification", CVPR 2018, Sec. 3.1.

Shapes: x [B, C, H, W] -> output [B, C, H, W], soft_attention [B, C, H, W], spatial_attention [B, 1, H, W],
channel_attention [B, C], regions [B, T, 2, 3]  (T hard regions).
Each "conv" below is convolution + BatchNorm + ReLU, as in the paper's building blocks.
- Spatial attention (Eq. 3 and Fig. 2(b)): global cross-channel average pooling (Eq. 3)
  -> 3x3 conv with stride 2 -> bilinear resize back to H x W -> 1x1 "scaling" conv   -> S [B, 1, H, W]
- Channel attention (Eqs. 4-5, Fig. 2(c)): global average pooling (Eq. 4) -> squeeze-excitation with two
  convs C -> C/r -> C (Eq. 5)                                                          -> c [B, C]
- Soft attention (Sec. 3.1 (I), Fig. 2(a)): A = sigmoid(conv1x1(S * c)); because the conv block ends in a
  ReLU, A lies in [0.5, 1) as the paper states.                                          -> A [B, C, H, W]
- Hard regional attention (Eq. 6, Fig. 2(d)): theta = tanh(FC(GAP(x))) gives translations (t_x, t_y)
  for each of T regions; the affine transform of region i is [[s_w, 0, t_x], [0, s_h, t_y]] with fixed
  scales (s_w = 1, s_h = 1/T: horizontal stripes, as in HA-CNN)                      -> [B, T, 2, 3]
- output = x * A (the soft-attended feature passed on to the global branch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU())


class HarmoniousAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, regions: int = 4, region_scale_w: float = 1.0,
                 region_scale_h: float = 0.25):
        super().__init__()
        self.regions = regions
        self.scale_w, self.scale_h = region_scale_w, region_scale_h
        self.spatial_conv = ConvBlock(1, 1, 3, stride=2)
        self.spatial_scale = ConvBlock(1, 1, 1)
        hidden = max(1, channels // reduction)
        self.channel_down = ConvBlock(channels, hidden, 1)
        self.channel_up = ConvBlock(hidden, channels, 1)
        self.fuse = ConvBlock(channels, channels, 1)
        self.hard_fc = nn.Linear(channels, 2 * regions)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        s = self.spatial_conv(x.mean(dim=1, keepdim=True))                       # Eq. 3 + 3x3/2 conv
        s = F.interpolate(s, size=(h, w), mode="bilinear", align_corners=True)   # resize to H x W
        s = self.spatial_scale(s)                                                 # [B, 1, H, W]
        gap = x.mean(dim=(2, 3), keepdim=True)                                    # Eq. 4
        ch = self.channel_up(self.channel_down(gap))                              # Eq. 5: [B, C, 1, 1]
        soft = torch.sigmoid(self.fuse(s * ch))                                   # soft attention A
        t = torch.tanh(self.hard_fc(gap.flatten(1))).reshape(b, self.regions, 2)  # Eq. 6 translations
        theta = torch.zeros(b, self.regions, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, :, 0, 0] = self.scale_w
        theta[:, :, 1, 1] = self.scale_h
        theta[:, :, :, 2] = t
        return {"output": x * soft, "soft_attention": soft, "spatial_attention": s,
                "channel_attention": ch.flatten(1), "regions": theta}


def _check(shapes, params):
    c = shapes["x"][1]
    return [] if c // params["reduction"] >= 1 else [f"C={c} is smaller than reduction={params['reduction']}"]


MECHANISM = Mechanism(
    slug="harmonious-attention",
    title="HA-CNN harmonious attention: soft (spatial x channel) attention and hard regional attention (translations)",
    reference="Li, Zhu, Gong, CVPR 2018, Sec. 3.1, Eqs. 3-6 and Fig. 2",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "soft-attended feature x * A"),
             OutputSpec("soft_attention", ("B", "C", "H", "W"), "soft attention A in [0.5, 1)", attention=True),
             OutputSpec("spatial_attention", ("B", "1", "H", "W"), "spatial attention S (before fusion)",
                        attention=True),
             OutputSpec("channel_attention", ("B", "C"), "channel attention c (before fusion)", attention=True),
             OutputSpec("regions", ("B", "T", "2", "3"),
                        "hard attention: affine transform [[s_w,0,t_x],[0,s_h,t_y]] of each region", attention=True)),
    hyperparams=(
        HyperParam("reduction", "int", 16, "reduction ratio r of the channel attention", 1, 1024),
        HyperParam("regions", "int", 4, "number T of hard attention regions", 1, 16),
        HyperParam("region_scale_w", "float", 1.0, "fixed horizontal scale s_w of each region", 0.01, 1.0),
        HyperParam("region_scale_h", "float", 0.25, "fixed vertical scale s_h of each region", 0.01, 1.0),
    ),
    build=lambda shapes, p: HarmoniousAttention(shapes["x"][1], p["reduction"], p["regions"],
                                                p["region_scale_w"], p["region_scale_h"]),
    example_shapes={"x": (2, 32, 8, 6)},
    test_shapes=({"x": (1, 16, 5, 3)}, {"x": (3, 64, 1, 1)}),
    constraints=("C // reduction >= 1",),
    check=_check,
    notes="The hard attention returns the region transforms (the paper's output of the HA module); cropping the "
          "regions for HA-CNN's local branches is done by the surrounding network. The spatial map is "
          "resized to exactly H x W (the released code upsamples by 2, which needs even sizes).",
)
