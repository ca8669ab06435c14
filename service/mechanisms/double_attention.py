"""Double attention block (A^2-Nets): feature gathering, then feature distribution.

Chen, Kalantidis, Li, Yan, Feng, "A^2-Nets: Double Attention Networks", NeurIPS 2018, Sec. 3.

Shapes: x [B, C, H, W] -> output [B, C, H, W], gather_maps [B, N, H, W], distribute_weights [B, N, H, W],
global_descriptors [B, M, N]   (M = C / reduction_m, N = C / reduction_n).
- A = phi(X; W_phi): 1x1 conv C -> M                         (feature maps to be gathered)  [B, M, HW]
- B = softmax over the HW positions of theta(X; W_theta), 1x1 conv C -> N (attention maps) [B, N, HW]
- First attention, second-order pooling (Eqs. 3-4): G_gather(X) = A B^T, i.e. g_j = A b_j  -> G [B, M, N]
- V = softmax over the N descriptors of rho(X; W_rho), 1x1 conv C -> N (attention vectors) [B, N, HW]
- Second attention, distribution (Eq. 5): z_i = G v_i                                      -> Z [B, M, HW]
- Z is expanded back to C channels by a 1x1 conv and added to the input (residual, Sec. 3.3):
  output = X + W_out Z.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class DoubleAttention(nn.Module):
    def __init__(self, channels: int, reduction_m: int = 4, reduction_n: int = 4):
        super().__init__()
        m, n = channels // reduction_m, channels // reduction_n
        self.conv_a = nn.Conv2d(channels, m, 1)      # phi
        self.conv_b = nn.Conv2d(channels, n, 1)      # theta (gathering attention maps)
        self.conv_v = nn.Conv2d(channels, n, 1)      # rho   (distribution attention vectors)
        self.conv_out = nn.Conv2d(m, channels, 1)    # expansion back to C

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        a = self.conv_a(x).flatten(2)                                  # [B, M, HW]
        gather = torch.softmax(self.conv_b(x).flatten(2), dim=2)       # [B, N, HW], softmax over positions
        dist = torch.softmax(self.conv_v(x).flatten(2), dim=1)         # [B, N, HW], softmax over descriptors
        g = a @ gather.transpose(1, 2)                                 # Eq. 4: [B, M, N]
        z = g @ dist                                                   # Eq. 5: [B, M, HW]
        out = x + self.conv_out(z.reshape(b, -1, h, w))
        return {"output": out, "gather_maps": gather.reshape(b, -1, h, w),
                "distribute_weights": dist.reshape(b, -1, h, w), "global_descriptors": g}


def _check(shapes, params):
    c = shapes["x"][1]
    return [f"C={c} is smaller than reduction_{k}={params['reduction_' + k]}"
            for k in ("m", "n") if c // params["reduction_" + k] < 1]


MECHANISM = Mechanism(
    slug="double-attention",
    title="A^2 double attention block: second-order attention pooling (gather) and adaptive distribution, residual",
    reference="Chen et al., NeurIPS 2018 (A^2-Nets), Sec. 3.1-3.3, Eqs. 3-5",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map X"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "X + W_out Z"),
             OutputSpec("gather_maps", ("B", "N", "H", "W"), "gathering attention maps (each sums to 1 over H*W)",
                        attention=True),
             OutputSpec("distribute_weights", ("B", "N", "H", "W"),
                        "distribution attention vectors v_i (sum to 1 over the N descriptors)", attention=True),
             OutputSpec("global_descriptors", ("B", "M", "N"), "gathered global features G = A B^T",
                        attention=True)),
    hyperparams=(
        HyperParam("reduction_m", "int", 4, "M = C / reduction_m feature channels gathered", 1, 1024),
        HyperParam("reduction_n", "int", 4, "N = C / reduction_n global descriptors", 1, 1024),
    ),
    build=lambda shapes, p: DoubleAttention(shapes["x"][1], p["reduction_m"], p["reduction_n"]),
    example_shapes={"x": (2, 16, 7, 7)},
    test_shapes=({"x": (1, 8, 5, 3)}, {"x": (3, 32, 1, 1)}),
    constraints=("C // reduction_m >= 1", "C // reduction_n >= 1"),
    check=_check,
)
