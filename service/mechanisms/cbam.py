"""Convolutional Block Attention Module (CBAM): channel attention followed by spatial attention.

Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018.

Shapes: x [B, C, H, W] -> output [B, C, H, W], channel_weights [B, C], spatial_map [B, 1, H, W].
- Channel attention (Eq. 2): M_c(F) = sigmoid(W1 relu(W0 AvgPool(F)) + W1 relu(W0 MaxPool(F))),
  a shared MLP W0: C/r x C, W1: C x C/r (no biases in the equation; ``mlp_bias`` adds them as in the
  authors' released code)                                                             -> [B, C]
- F' = M_c(F) * F (Eq. 1, first line).
- Spatial attention (Eq. 3): M_s(F') = sigmoid(f^{7x7}([AvgPool_c(F'); MaxPool_c(F')])), pooling
  along the channel axis, a k x k convolution 2 -> 1 with zero padding k//2 and no bias. The released
  code (and timm) put a BatchNorm after that convolution: ``spatial_norm=True``.   -> [B, 1, H, W]
- F'' = M_s(F') * F' (Eq. 1, second line).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7,
                 spatial_norm: bool = False, mlp_bias: bool = False):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp_fc1 = nn.Linear(channels, hidden, bias=mlp_bias)   # W0
        self.mlp_fc2 = nn.Linear(hidden, channels, bias=mlp_bias)   # W1
        self.spatial_conv = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1) if spatial_norm else None

    def _mlp(self, v: torch.Tensor) -> torch.Tensor:
        return self.mlp_fc2(torch.relu(self.mlp_fc1(v)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mc = torch.sigmoid(self._mlp(x.mean(dim=(2, 3))) + self._mlp(x.amax(dim=(2, 3))))   # Eq. 2
        f1 = x * mc[:, :, None, None]                                                       # Eq. 1a
        pooled = torch.cat([f1.mean(dim=1, keepdim=True), f1.amax(dim=1, keepdim=True)], dim=1)
        s = self.spatial_conv(pooled)
        if self.spatial_bn is not None:
            s = self.spatial_bn(s)
        ms = torch.sigmoid(s)                                                               # Eq. 3
        return {"output": f1 * ms, "channel_weights": mc, "spatial_map": ms}                # Eq. 1b


def _check(shapes, params):
    problems = []
    c = shapes["x"][1]
    if c // params["reduction"] < 1:
        problems.append(f"C={c} is smaller than reduction={params['reduction']}: the MLP bottleneck would be empty")
    if params["spatial_kernel"] % 2 == 0:
        problems.append(f"spatial_kernel={params['spatial_kernel']} must be odd (same-size output)")
    return problems


MECHANISM = Mechanism(
    slug="cbam",
    title="CBAM block: channel attention (avg+max pooled shared MLP), then spatial attention "
          "(7x7 conv over channel avg/max)",
    reference="Woo et al., ECCV 2018, Eqs. 1-3",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map F"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "refined feature map F''"),
             OutputSpec("channel_weights", ("B", "C"), "channel attention M_c in (0, 1)", attention=True),
             OutputSpec("spatial_map", ("B", "1", "H", "W"), "spatial attention M_s in (0, 1), computed on F'",
                        attention=True)),
    hyperparams=(
        HyperParam("reduction", "int", 16, "MLP reduction ratio r", 1, 1024),
        HyperParam("spatial_kernel", "int", 7, "kernel size of the spatial convolution (odd)", 1, 15),
        HyperParam("spatial_norm", "bool", False, "BatchNorm after the spatial convolution (released code, timm)"),
        HyperParam("mlp_bias", "bool", False, "biases in the shared MLP (released code uses them)"),
    ),
    build=lambda shapes, p: CBAM(shapes["x"][1], p["reduction"], p["spatial_kernel"], p["spatial_norm"],
                                 p["mlp_bias"]),
    example_shapes={"x": (2, 32, 7, 7)},
    test_shapes=({"x": (1, 16, 5, 3)}, {"x": (3, 64, 1, 1)}),
    constraints=("C // reduction >= 1", "spatial_kernel odd"),
    check=_check,
    notes="Defaults follow the paper's equations (no MLP biases, no BatchNorm in the spatial branch); "
          "spatial_norm=True reproduces timm's CbamModule and the authors' code.",
)
