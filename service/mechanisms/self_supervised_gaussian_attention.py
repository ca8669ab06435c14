"""Self-supervised Gaussian attention: the parameterised Gaussian attention module of GATCluster.

Niu, Zhang, Wang, Liang, "GATCluster: Self-Supervised Gaussian-Attention Network for Image Clustering",
ECCV 2020, Sec. 3 (attention mapping task). The layer choices (1x1 conv + BN + ReLU, one dense layer to
the Gaussian parameters, sigmoid) follow the authors' released configs; the Gaussian itself follows the
paper, not the released head, which differs in two ways: its generate_gaussian_att_map takes
theta[:, ::2] as the centre and theta[:, -1] as the spread, so with three parameters the column
centre is the spread and theta_1 is never used; and its position grid indexes row i at i * H + j,
which is only right for square maps. Here the centre is (theta_0, theta_1), the spread theta_2, and
the grid is row-major for any H x W.

Shapes: features F [B, C, H, W] -> output f_a [B, C] (attention-pooled feature).
- Attention features: F' = ReLU(BN(conv1x1(F)))                  [B, C_a, H, W]
- Gaussian parameters: theta = sigmoid(W_theta vec(F') + b)      [B, 3] = (mu_1, mu_2, s), all in (0, 1)
- Positions u = (i / (H - 1), j / (W - 1)) in [0, 1]^2 (0 when a side has length 1)
- Attention map: a(u) = exp(-||u - mu||^2 / (2 lambda s + 1e-5))   (isotropic Gaussian; lambda = 0.05)
- Attended feature: f_a = sum_u a(u) F(u)
- Soft-attention target (self-supervision, computed from cluster probabilities q [B, K] of the
  non-attended branch when they are given): p_ik = (q_ik^2 / sum_i q_ik) / sum_k (q_ik^2 / sum_i q_ik).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


def grid_coords(h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ii = torch.arange(h, dtype=like.dtype, device=like.device) / max(h - 1, 1)
    jj = torch.arange(w, dtype=like.dtype, device=like.device) / max(w - 1, 1)
    return ii, jj


def attention_target(q: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    p = q.pow(2) / (q.sum(dim=0) + eps)
    return p / (p.sum(dim=1, keepdim=True) + eps)


class GaussianAttention(nn.Module):
    def __init__(self, channels: int, height: int, width: int, att_channels: int = 10, lam: float = 0.05):
        super().__init__()
        self.att_conv = nn.Conv2d(channels, att_channels, 1)
        self.att_bn = nn.BatchNorm2d(att_channels)
        self.theta = nn.Linear(att_channels * height * width, 3)
        self.lam = lam

    def gaussian(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = torch.sigmoid(self.theta(torch.relu(self.att_bn(self.att_conv(f))).flatten(1)))   # [B, 3]
        ii, jj = grid_coords(f.shape[2], f.shape[3], f)
        d2 = (ii[None, :, None] - theta[:, 0, None, None]) ** 2 + (jj[None, None, :] - theta[:, 1, None, None]) ** 2
        amap = torch.exp(-d2 / (2 * self.lam * theta[:, 2, None, None] + 1e-5))                  # [B, H, W]
        return amap, theta

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        amap, theta = self.gaussian(features)
        pooled = torch.einsum("bhw,bchw->bc", amap, features)
        return {"output": pooled, "attention_map": amap, "gaussian_params": theta}


def _check(shapes, p):
    b, c, h, w = shapes["features"]
    return [] if h * w <= 4096 else [f"H*W={h * w} is above 4096 (the parameter head is dense over H*W)"]


MECHANISM = Mechanism(
    slug="self-supervised-gaussian-attention",
    title="GATCluster's parameterised Gaussian attention: predicted 2-D Gaussian map and attention pooling",
    reference="Niu et al., ECCV 2020 (GATCluster), Sec. 3 attention mapping (centre and spread as in the paper)",
    inputs=(InputSpec("features", ("B", "C", "H", "W"), "CNN feature map"),),
    outputs=(OutputSpec("output", ("B", "C"), "attended feature f_a = sum_u a(u) F(u)"),
             OutputSpec("attention_map", ("B", "H", "W"), "Gaussian attention a(u) in (0, 1]", attention=True),
             OutputSpec("gaussian_params", ("B", "3"), "(mu_row, mu_col, s) in (0, 1)", attention=True)),
    hyperparams=(HyperParam("att_channels", "int", 10, "channels C_a of the attention conv (the code uses K)", 1, 1024),
                 HyperParam("lam", "float", 0.05, "lambda, scale of the Gaussian's spread", 1e-4, 10.0)),
    build=lambda shapes, p: GaussianAttention(shapes["features"][1], shapes["features"][2], shapes["features"][3],
                                              p["att_channels"], p["lam"]),
    example_shapes={"features": (2, 8, 6, 6)},
    test_shapes=({"features": (1, 4, 1, 5)}, {"features": (3, 16, 7, 3)}),
    constraints=("H*W <= 4096 (the Gaussian-parameter layer is fully connected over positions)",),
    check=_check,
    notes="Isotropic Gaussian with variance lambda*s as in the released code (the paper also describes a "
          "correlated variant, not included); weighted features are summed (not averaged). Centre and "
          "spread are three separate parameters and the grid is row-major, unlike the released head. The "
          "soft-attention loss (attended-branch prediction pushed toward a sharpened target, "
          "attention_target()) is a training objective; the gatcluster entry returns that target.",
)
