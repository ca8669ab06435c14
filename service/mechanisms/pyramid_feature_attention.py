"""Pyramid feature attention: context-aware pyramid features, channel-wise attention on high-level
features and spatial attention, computed from them, on low-level features.

Zhao, Wu, "Pyramid Feature Attention Network for Saliency Detection", CVPR 2019 (Sec. 3.1 CPFE,
Sec. 3.2 channel-wise and spatial attention).

Shapes: low [B, Cl, H, W], high [B, Ch, H, W] (high-level features already upsampled to the low-level
size) -> output [B, Cl, H, W] (attended low-level features); high_attended [B, Cp, H, W];
channel_weights [B, Cp]; spatial_map [B, 1, H, W]. Cp = 4 * cpfe_channels with CPFE, else Ch.
- CPFE (optional): a 1 x 1 convolution and three 3 x 3 atrous convolutions (dilation 3, 5, 7) of the
  high-level features, concatenated (multi-receptive-field context).
- Channel-wise attention (CA): v = GAP(f_h); CA = sigmoid(fc2(ReLU(fc1(v)))); f~_h = CA * f_h.
- Spatial attention (SA) from f~_h: C1 = conv_{k x 1}(conv_{1 x k}(f~_h)), C2 = conv_{1 x k}(conv_{k x 1}(f~_h))
  (first convolution of each branch to Cp/2 channels, second to 1); SA = sigmoid(C1 + C2); f~_l = SA * f_l.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class PyramidFeatureAttention(nn.Module):
    def __init__(self, high_channels: int, cpfe: bool = True, cpfe_channels: int = 32, reduction: int = 4,
                 kernel_size: int = 9):
        super().__init__()
        self.cpfe = cpfe
        if cpfe:
            self.cpfe_1x1 = nn.Conv2d(high_channels, cpfe_channels, 1)
            self.cpfe_atrous = nn.ModuleList(
                nn.Conv2d(high_channels, cpfe_channels, 3, padding=d, dilation=d) for d in (3, 5, 7))
            cp = 4 * cpfe_channels
        else:
            cp = high_channels
        self.fc1 = nn.Linear(cp, max(1, cp // reduction))
        self.fc2 = nn.Linear(max(1, cp // reduction), cp)
        k, p, mid = kernel_size, kernel_size // 2, max(1, cp // 2)
        self.branch1_a = nn.Conv2d(cp, mid, (1, k), padding=(0, p))   # conv_{1 x k}
        self.branch1_b = nn.Conv2d(mid, 1, (k, 1), padding=(p, 0))    # then conv_{k x 1}
        self.branch2_a = nn.Conv2d(cp, mid, (k, 1), padding=(p, 0))   # conv_{k x 1}
        self.branch2_b = nn.Conv2d(mid, 1, (1, k), padding=(0, p))    # then conv_{1 x k}

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cpfe:
            high = torch.cat([self.cpfe_1x1(high), *(conv(high) for conv in self.cpfe_atrous)], dim=1)
        ca = torch.sigmoid(self.fc2(torch.relu(self.fc1(high.mean(dim=(2, 3))))))     # CA
        high_att = high * ca[:, :, None, None]                                        # f~_h
        c1 = self.branch1_b(self.branch1_a(high_att))
        c2 = self.branch2_b(self.branch2_a(high_att))
        sa = torch.sigmoid(c1 + c2)                                                   # SA [B, 1, H, W]
        return {"output": low * sa, "high_attended": high_att, "channel_weights": ca, "spatial_map": sa}


def _check(shapes, params):
    if params["kernel_size"] % 2 == 0:
        return [f"kernel_size={params['kernel_size']} must be odd (same-size separable convolutions)"]
    return []


MECHANISM = Mechanism(
    slug="pyramid-feature-attention",
    title="Pyramid feature attention: CPFE atrous pyramid + SE-style channel attention on high-level features, "
          "separable large-kernel spatial attention from them gating the low-level features",
    reference="Zhao & Wu, CVPR 2019, Sec. 3.1 (CPFE) and Sec. 3.2 (channel-wise attention, spatial attention "
              "equations)",
    inputs=(InputSpec("low", ("B", "Cl", "H", "W"), "low-level (shallow) features f_l"),
            InputSpec("high", ("B", "Ch", "H", "W"), "high-level features f_h, upsampled to the low-level size")),
    outputs=(OutputSpec("output", ("B", "Cl", "H", "W"), "spatially attended low-level features f~_l = SA * f_l"),
             OutputSpec("high_attended", ("B", "Cp", "H", "W"), "channel-attended high-level features f~_h"),
             OutputSpec("channel_weights", ("B", "Cp"), "channel attention CA in (0, 1)", attention=True),
             OutputSpec("spatial_map", ("B", "1", "H", "W"), "spatial attention SA in (0, 1)", attention=True)),
    hyperparams=(
        HyperParam("cpfe", "bool", True, "apply the context-aware pyramid feature extraction to the high-level "
                   "input first"),
        HyperParam("cpfe_channels", "int", 32, "channels of each of the 4 CPFE branches (32 in the paper)", 1, 1024),
        HyperParam("reduction", "int", 4, "bottleneck ratio of the channel-attention FC layers", 1, 1024),
        HyperParam("kernel_size", "int", 9, "k of the 1 x k / k x 1 spatial-attention convolutions (9 in the paper)",
                   1, 31),
    ),
    build=lambda shapes, p: PyramidFeatureAttention(shapes["high"][1], p["cpfe"], p["cpfe_channels"],
                                                    p["reduction"], p["kernel_size"]),
    example_shapes={"low": (2, 8, 12, 12), "high": (2, 16, 12, 12)},
    test_shapes=({"low": (1, 3, 5, 9), "high": (1, 1, 5, 9)}, {"low": (3, 64, 16, 8), "high": (3, 32, 16, 8)}),
    constraints=("kernel_size odd",),
    check=_check,
    notes="One high-level input: the paper applies CPFE to three VGG stages (conv3-3, conv4-3, conv5-3) and "
          "concatenates them after upsampling; here the caller passes one (or already fused) high-level map. "
          "Batch norm / ReLU that the released code puts after the spatial-attention convolutions are left out "
          "(the paper's equations have none); the CA reduction ratio 4 follows the released code. The saliency "
          "head and the edge-preservation loss are not part of the module.",
)
