"""Efficient Channel Attention (ECA) module.

Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
Networks", CVPR 2020.

Shapes: x [B, C, H, W] -> output [B, C, H, W], weights [B, C].
- Squeeze (global average pooling, as in SE): y_c = 1/(HW) * sum_{i,j} x_c(i, j)        -> y [B, C]
- Local cross-channel interaction (Eq. 4 / Eq. 5): omega = sigmoid(C1D_k(y)), a 1-D convolution of
  kernel size k along the channel axis, zero padded, no bias, one kernel shared by all channels. -> [B, C]
- Adaptive kernel size (Eq. 12): k = psi(C) = | log2(C)/gamma + b/gamma |_odd, gamma = 2, b = 1,
  computed here as t = int(|(log2 C + b)/gamma|), then t, or t + 1 when t is even.
  The authors' released code does not compute psi(C): its eca_layer takes a fixed k_size (default 3)
  and the ImageNet models are trained with per-stage sizes given on the command line (--ksize 3557).
  kernel_size > 0 fixes k, which reproduces that code.
- Rescale: output_c = omega_c * x_c.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


def adaptive_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """psi(C) of Eq. 12: the odd integer from |(log2 C + b) / gamma| (t, or t + 1 if t is even)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 0, gamma: float = 2.0, b: float = 1.0):
        super().__init__()
        k = kernel_size if kernel_size > 0 else adaptive_kernel_size(channels, gamma, b)
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = x.mean(dim=(2, 3))                                    # GAP: [B, C]
        w = torch.sigmoid(self.conv(y[:, None, :])[:, 0, :])      # Eq. 4: sigmoid(C1D_k(y))
        return {"output": x * w[:, :, None, None], "weights": w}


def _check(shapes, params):
    k = params["kernel_size"]
    if k > 0 and k % 2 == 0:
        return [f"kernel_size={k} must be odd (or 0 for the adaptive size psi(C))"]
    return []


MECHANISM = Mechanism(
    slug="efficient-channel-attention",
    title="ECA module: global average pooling, 1-D convolution across channels of adaptive size k, sigmoid gate",
    reference="Wang et al., CVPR 2020, Eqs. 4, 5 and 12 (adaptive kernel size)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "recalibrated feature map"),
             OutputSpec("weights", ("B", "C"), "channel gate omega in (0, 1)", attention=True)),
    hyperparams=(
        HyperParam("kernel_size", "int", 0, "1-D kernel size k; 0 = adaptive psi(C) of Eq. 12", 0, 31),
        HyperParam("gamma", "float", 2.0, "gamma of the mapping psi(C)", 0.1, 16.0),
        HyperParam("b", "float", 1.0, "b of the mapping psi(C)", -16.0, 16.0),
    ),
    build=lambda shapes, p: EfficientChannelAttention(shapes["x"][1], p["kernel_size"], p["gamma"], p["b"]),
    example_shapes={"x": (2, 32, 7, 7)},
    test_shapes=({"x": (1, 16, 5, 3)}, {"x": (3, 4, 1, 1)}),
    constraints=("kernel_size is 0 (adaptive) or odd",),
    check=_check,
    notes="By default k follows the paper's |.|_odd rule; timm's EcaModule additionally clamps k to at least 3, "
          "which only differs for C < 8 (paper gives k = 1 there). The authors' code uses a fixed k "
          "(kernel_size=3, or per stage 3, 5, 5, 7).",
)
