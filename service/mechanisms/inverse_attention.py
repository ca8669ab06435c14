"""Inverse attention block (IAB) of the Inverse Attention Guided Deep Crowd Counting Network.

Sindagi, Patel, "Inverse Attention Guided Deep Crowd Counting Network", AVSS 2019 (arXiv:1907.01193).

Shapes: x [B, C, H, W] (VGG-16 conv features) -> output F' [B, C, H, W], inverse_attention
A_inv [B, H, W].
- Inverse attention map: A_inv = sigmoid(f_ia(F)), f_ia a small conv stack
  (conv3x3 C -> hidden, ReLU, conv3x3 hidden -> hidden, ReLU, conv1x1 hidden -> 1).
  A_inv is trained (BCE) against the complement 1 - S of a crowd mask derived from the head
  annotations, so it is high on background.
- Background suppression: F' = F - A_inv * F (broadcast over channels); F' feeds the density head.
Uncertain: the exact depth and widths of f_ia are not reproduced from the paper (its text could not be
read here); the conv stack above is a stand-in with the same role, hidden width a hyper-parameter.
The training target and loss are outside the module.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class InverseAttention(nn.Module):
    def __init__(self, channels: int, hidden: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.conv3 = nn.Conv2d(hidden, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        a = torch.sigmoid(self.conv3(z))                          # A_inv: [B, 1, H, W]
        return {"output": x - a * x, "inverse_attention": a[:, 0]}


MECHANISM = Mechanism(
    slug="inverse-attention",
    title="Inverse attention block: predicted background map suppresses features (F - A_inv * F)",
    reference="Sindagi & Patel, AVSS 2019 (IA-DCCN, inverse attention block)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "backbone feature map F"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "F' = F - A_inv * F"),
             OutputSpec("inverse_attention", ("B", "H", "W"), "A_inv in (0, 1), high on background",
                        attention=True)),
    hyperparams=(HyperParam("hidden", "int", 32, "channels of the f_ia conv stack", 1, 4096),),
    build=lambda shapes, p: InverseAttention(shapes["x"][1], p["hidden"]),
    example_shapes={"x": (2, 16, 6, 5)},
    test_shapes=({"x": (1, 3, 7, 1)}, {"x": (3, 8, 1, 1)}),
    notes="Layer configuration of f_ia is an assumption (see docstring).",
)
