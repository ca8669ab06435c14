"""Split-Attention convolution (the "Splat" block of ResNeSt).

Zhang, Wu, Zhang, Zhu, Lin, Zhang, Sun, He, Mueller, Manmatha, Li, Smola, "ResNeSt: Split-Attention
Networks", CVPR Workshops 2022 (arXiv 2004.08955, 2020), Sec. 3 and the radix-major implementation
of Sec. 4 / Fig. 4.

Shapes: x [B, C, H, W] -> output [B, C, H, W], split_weights [B, R, C]  (R = radix, K = cardinality).
- Splits: one grouped k x k convolution with K*R groups produces R*C channels, followed by BatchNorm
  and ReLU; U_r = channels [r*C, (r+1)*C) are the R splits (cardinal group k = channels
  [k*C/K, (k+1)*C/K) inside each split).                                             -> U [B, R, C, H, W]
- Eq. 1: U_hat = sum_r U_r ;  Eq. 2: s_c = 1/(HW) sum_{i,j} U_hat_c(i, j)            -> s [B, C]
- G: two 1x1 convolutions with K groups (fc1: C -> d with BatchNorm and ReLU, fc2: d -> R*C),
  d = max(C*R/reduction, 32).
- Eq. 3 (r-softmax): a_r(c) = exp(G_r^c(s)) / sum_j exp(G_j^c(s)) for R > 1; sigmoid(G^c(s)) for R = 1.
- Eq. 4: V_c = sum_r a_r(c) U_r,c.  (The residual shortcut Y = V + T(X) belongs to the ResNeSt
  bottleneck around this block and is not included.)
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


def attention_channels(channels: int, radix: int, reduction: int) -> int:
    return max(channels * radix // reduction, 32)


class SplitAttention(nn.Module):
    def __init__(self, channels: int, radix: int = 2, cardinality: int = 1, kernel_size: int = 3,
                 reduction: int = 4, norm: bool = True):
        super().__init__()
        self.radix, self.cardinality = radix, cardinality
        d = attention_channels(channels, radix, reduction)
        self.conv = nn.Conv2d(channels, channels * radix, kernel_size, padding=kernel_size // 2,
                              groups=cardinality * radix, bias=False)
        self.bn0 = nn.BatchNorm2d(channels * radix) if norm else nn.Identity()
        self.fc1 = nn.Conv2d(channels, d, 1, groups=cardinality)
        self.bn1 = nn.BatchNorm2d(d) if norm else nn.Identity()
        self.fc2 = nn.Conv2d(d, channels * radix, 1, groups=cardinality)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        r, k = self.radix, self.cardinality
        u = torch.relu(self.bn0(self.conv(x))).reshape(b, r, c, h, w)          # the R splits
        s = u.sum(dim=1).mean(dim=(2, 3), keepdim=True)                         # Eqs. 1-2
        logits = self.fc2(torch.relu(self.bn1(self.fc1(s)))).reshape(b, k, r, c // k)
        if r > 1:
            a = torch.softmax(logits, dim=2)                                    # Eq. 3, r-softmax
        else:
            a = torch.sigmoid(logits)
        a = a.transpose(1, 2).reshape(b, r, c)                                  # [B, R, C]
        out = (u * a[:, :, :, None, None]).sum(dim=1)                           # Eq. 4
        return {"output": out, "split_weights": a}


def _check(shapes, params):
    c = shapes["x"][1]
    r, k = params["radix"], params["cardinality"]
    problems = []
    if c % (r * k):
        problems.append(f"C={c} must be divisible by radix*cardinality={r * k}")
    d = attention_channels(c, r, params["reduction"])
    if d % k:
        problems.append(f"attention width max(C*radix/reduction, 32)={d} must be divisible by cardinality={k}")
    if params["kernel_size"] % 2 == 0:
        problems.append(f"kernel_size={params['kernel_size']} must be odd")
    return problems


MECHANISM = Mechanism(
    slug="split-attention",
    title="Split-Attention convolution (ResNeSt Splat): R radix splits per cardinal group, r-softmax over splits",
    reference="Zhang et al., ResNeSt, CVPRW 2022 (arXiv 2004.08955), Sec. 3.1-3.2, Eqs. 1-4, "
              "radix-major layout of Sec. 4",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "attention-weighted combination of the splits"),
             OutputSpec("split_weights", ("B", "R", "C"),
                        "a_r(c): r-softmax over the R splits (sums to 1 over R), sigmoid when R = 1",
                        attention=True)),
    hyperparams=(
        HyperParam("radix", "int", 2, "number of splits R per cardinal group", 1, 8),
        HyperParam("cardinality", "int", 1, "number of cardinal groups K", 1, 64),
        HyperParam("kernel_size", "int", 3, "kernel of the split convolution (odd)", 1, 7),
        HyperParam("reduction", "int", 4, "reduction factor of the attention MLP: d = max(C*R/reduction, 32)", 1, 64),
        HyperParam("norm", "bool", True, "BatchNorm after the split convolution and after fc1 (as in ResNeSt)"),
    ),
    build=lambda shapes, p: SplitAttention(shapes["x"][1], p["radix"], p["cardinality"], p["kernel_size"],
                                           p["reduction"], p["norm"]),
    example_shapes={"x": (2, 16, 7, 7)},
    test_shapes=({"x": (1, 8, 5, 3)}, {"x": (3, 32, 1, 1)}),
    constraints=("C divisible by radix*cardinality", "max(C*radix/reduction, 32) divisible by cardinality",
                 "kernel_size odd"),
    check=_check,
    notes="Block only: the surrounding 1x1 convolutions and the shortcut of the ResNeSt bottleneck are left out. "
          "Stride 1, output width = input width.",
)
