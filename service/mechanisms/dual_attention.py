"""Dual attention (DANet): position attention module and channel attention module in parallel.

Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019, Sec. 3.2-3.4.

Shapes: x = A [B, C, H, W] -> output [B, C, H, W], position_attention S [B, HW, HW],
channel_attention X [B, C, C].
- Position attention module (Eqs. 1-2): B, C = 1x1 convs C -> C/8, D = 1x1 conv C -> C (the released
  code names them key/query/value);
  s_ji = exp(B_i . C_j) / sum_i exp(B_i . C_j)   (row j = query position, softmax over i)  -> S [B, N, N]
  E^p_j = alpha * sum_i s_ji D_i + A_j,  alpha a learned scalar (initialised to 0 in the paper).
- Channel attention module (Eqs. 3-4), computed directly from A (no convolutions):
  x_ji = exp(A_i . A_j) / sum_i exp(A_i . A_j)   (A_i = channel i as an N-vector)           -> X [B, C, C]
  E^c_j = beta * sum_i x_ji A_i + A_j,  beta a learned scalar (initialised to 0).
- Fusion (Sec. 3.4): element-wise sum, output = E^p + E^c.
cam_energy="released" reproduces the authors' CAM_Module, which takes the softmax of
max_i(A_j . A_i) - A_j . A_i, i.e. softmax over i of -A_j . A_i (the row maximum cancels in the softmax).
With need_weights=False both softmax products run through scaled_dot_product_attention (scale 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class DualAttention(nn.Module):
    def __init__(self, channels: int, qk_reduction: int = 8, gain_init: float = 0.0, cam_energy: str = "paper"):
        super().__init__()
        self.cam_sign = -1.0 if cam_energy == "released" else 1.0
        inner = channels // qk_reduction
        self.conv_b = nn.Conv2d(channels, inner, 1)          # B (taken at the attended positions i)
        self.conv_c = nn.Conv2d(channels, inner, 1)          # C (taken at the output position j)
        self.conv_d = nn.Conv2d(channels, channels, 1)       # D (values)
        self.alpha = nn.Parameter(torch.full((1,), float(gain_init)))
        self.beta = nn.Parameter(torch.full((1,), float(gain_init)))

    def forward(self, x: torch.Tensor, need_weights: bool = True) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        q = self.conv_c(x).flatten(2).transpose(1, 2)         # C_j: [B, N, C/8]
        k = self.conv_b(x).flatten(2).transpose(1, 2)         # B_i: [B, N, C/8]
        v = self.conv_d(x).flatten(2).transpose(1, 2)         # D_i: [B, N, C]
        a = x.flatten(2)                                       # [B, C, N]
        out: dict[str, torch.Tensor] = {}
        if need_weights:
            s = torch.softmax(q @ k.transpose(1, 2), dim=-1)  # Eq. 1: [B, N(j), N(i)]
            pos = s @ v                                        # sum_i s_ji D_i
            xc = torch.softmax(self.cam_sign * (a @ a.transpose(1, 2)), dim=-1)  # Eq. 3: [B, C(j), C(i)]
            chn = xc @ a                                       # sum_i x_ji A_i
            out.update(position_attention=s, channel_attention=xc)
        else:
            pos = F.scaled_dot_product_attention(q, k, v, scale=1.0)
            chn = F.scaled_dot_product_attention(self.cam_sign * a, a, a, scale=1.0)
        e_p = self.alpha * pos.transpose(1, 2).reshape(b, c, h, w) + x   # Eq. 2
        e_c = self.beta * chn.reshape(b, c, h, w) + x                    # Eq. 4
        return {"output": e_p + e_c, **out}


def _check(shapes, params):
    c = shapes["x"][1]
    return [] if c // params["qk_reduction"] >= 1 else [
        f"C={c} is smaller than qk_reduction={params['qk_reduction']}: query/key width would be 0"]


MECHANISM = Mechanism(
    slug="dual-attention",
    title="DANet dual attention: position attention module + channel attention module, summed",
    reference="Fu et al., CVPR 2019, Eqs. 1-4 and the sum fusion of Sec. 3.4",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "local feature map A"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "E^p + E^c"),
             OutputSpec("position_attention", ("B", "HW", "HW"), "spatial attention S, rows sum to 1",
                        attention=True),
             OutputSpec("channel_attention", ("B", "C", "C"), "channel attention X, rows sum to 1",
                        attention=True)),
    hyperparams=(
        HyperParam("qk_reduction", "int", 8, "query/key width C / qk_reduction (paper: 8)", 1, 1024),
        HyperParam("gain_init", "float", 0.0,
                   "initial value of the learned scales alpha and beta (paper: 0, so an untrained block is "
                   "the identity sum 2A; set e.g. 1 to see the attention with seed weights)", -10.0, 10.0),
        HyperParam("cam_energy", "choice", "paper",
                   "channel attention energy: paper = softmax(A A^T) (Eq. 3); released = softmax(max(A A^T) - A A^T) "
                   "as in the authors' code", choices=("paper", "released")),
    ),
    build=lambda shapes, p: DualAttention(shapes["x"][1], p["qk_reduction"], p["gain_init"], p["cam_energy"]),
    example_shapes={"x": (2, 16, 7, 7)},
    test_shapes=({"x": (1, 8, 5, 3)}, {"x": (3, 32, 1, 1)}),
    constraints=("C // qk_reduction >= 1",),
    check=_check,
    notes="The two attention modules and the sum fusion only; the 3x3 conv-BN-ReLU layers DANet's head puts "
          "before and after each module are left out. The channel module follows Eq. 3 (softmax of A A^T) by "
          "default; cam_energy=released takes the softmax of max(A A^T) - A A^T as the authors' code does.",
)
