"""High-Order Attention (HOA) module of the Mixed High-Order Attention Network (MHN).

Chen, Deng, Hu, "Mixed High-Order Attention Network for Person Re-Identification", ICCV 2019, Sec. 3.2.

Shapes: x [B, C, H, W] -> output [B, C, H, W], attention [B, C, H, W] (a map over channels AND positions).
At every position the attention is an R-th order polynomial predictor of the local descriptor x:
  a(x) = sigmoid( sum_{r=1..R} <W^r, x (x) ... (x) x> )  (r-fold outer product),
with each order-r weight tensor W^r replaced by a rank-D^r decomposition, so that (Eqs. 5-8)
  z^r_k = U^r_k x              (r separate 1x1 convs C -> D, k = 1..r)
  z^r   = z^r_1 * ... * z^r_r  (Hadamard product: an order-r interaction)
  a(x)  = sigmoid( sum_r alpha^r relu(z^r) ),  alpha^r a 1x1 conv D -> C,
where the ReLU on z^r adds capacity as in the paper. output = x * a(x).
R = 1 is the first-order (SE/spatial-like) special case.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class HighOrderAttention(nn.Module):
    def __init__(self, channels: int, order: int = 3, reduction: int = 1):
        super().__init__()
        hidden = max(1, channels // reduction)
        # u[r-1][k]: the k-th factor of order r (r factors for order r)
        self.u = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(channels, hidden, 1, bias=False) for _ in range(r)) for r in range(1, order + 1))
        self.alpha = nn.ModuleList(nn.Conv2d(hidden, channels, 1, bias=False) for _ in range(order))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = torch.zeros_like(x)
        for factors, alpha in zip(self.u, self.alpha, strict=True):
            z = factors[0](x)
            for f in factors[1:]:
                z = z * f(x)                       # Hadamard product of the r factors
            logits = logits + alpha(torch.relu(z))
        a = torch.sigmoid(logits)
        return {"output": x * a, "attention": a}


def _check(shapes, params):
    c = shapes["x"][1]
    return [] if c // params["reduction"] >= 1 else [f"C={c} is smaller than reduction={params['reduction']}"]


MECHANISM = Mechanism(
    slug="high-order-attention",
    title="HOA module: R-th order polynomial attention via rank-decomposed Hadamard products of 1x1 convolutions",
    reference="Chen, Deng, Hu, ICCV 2019 (MHN), Sec. 3.2, Eqs. 5-8",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "x * a(x)"),
             OutputSpec("attention", ("B", "C", "H", "W"), "high-order attention map a(x) in (0, 1)",
                        attention=True)),
    hyperparams=(
        HyperParam("order", "int", 3, "polynomial order R (MHN mixes HOA modules of order 1..R)", 1, 6),
        HyperParam("reduction", "int", 1, "rank D = C / reduction of each order's decomposition", 1, 1024),
    ),
    build=lambda shapes, p: HighOrderAttention(shapes["x"][1], p["order"], p["reduction"]),
    example_shapes={"x": (2, 16, 7, 7)},
    test_shapes=({"x": (1, 8, 5, 3)}, {"x": (3, 32, 1, 1)}),
    constraints=("C // reduction >= 1",),
    check=_check,
    notes="One HOA module of order R. MHN itself runs several HOA modules (orders 1..R) in parallel branches "
          "with an adversarial constraint; that network-level mixing is not part of this block. "
          "The 1x1 convolutions carry no bias (the polynomial has no constant terms).",
)
