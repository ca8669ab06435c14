"""Squeeze-and-Excitation block.

Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018.

Shapes: x [B, C, H, W] -> output [B, C, H, W], weights [B, C].
- Squeeze (Eq. 2): z_c = 1/(HW) * sum_{i,j} x_c(i, j)             -> z [B, C]
- Excitation (Eq. 3): s = sigmoid(W2 relu(W1 z)), W1: C/r x C, W2: C x C/r -> s [B, C]
- Scale (Eq. 4): output_c = s_c * x_c
The two fully connected layers carry biases, as in the released SENet models.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = x.mean(dim=(2, 3))                                   # Eq. 2
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(z))))     # Eq. 3
        return {"output": x * s[:, :, None, None], "weights": s}  # Eq. 4


def _check(shapes, params):
    c = shapes["x"][1]
    return [] if c // params["reduction"] >= 1 else [
        f"C={c} is smaller than reduction={params['reduction']}: the bottleneck would be empty"]


MECHANISM = Mechanism(
    slug="squeeze-and-excitation",
    title="SE block: global average pooling, two-layer bottleneck gate, channel rescaling",
    reference="Hu et al., CVPR 2018, Eqs. 2-4",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "recalibrated feature map"),
             OutputSpec("weights", ("B", "C"), "channel gate s in (0, 1)", attention=True)),
    hyperparams=(HyperParam("reduction", "int", 16, "bottleneck reduction ratio r", 1, 1024),),
    build=lambda shapes, p: SqueezeExcitation(shapes["x"][1], p["reduction"]),
    example_shapes={"x": (2, 32, 7, 7)},
    test_shapes=({"x": (1, 16, 5, 3)}, {"x": (3, 64, 1, 1)}),
    constraints=("C // reduction >= 1",),
    check=_check,
)
