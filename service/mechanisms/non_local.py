"""Non-local block (space-only, 2-D images).

Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018.

Shapes: x [B, C, H, W] -> output [B, C, H, W], attention [B, N, M] with N = H*W query positions and
M the key positions (M = N, or floor(H/2)*floor(W/2) with ``subsample``). C' = C // reduction
(the paper uses C' = C/2, "half of the number of channels in x").

- Eq. 1: y_i = 1/C(x) * sum_j f(x_i, x_j) g(x_j), with g(x_j) = W_g x_j (a 1x1 conv, C -> C').
- Pairwise functions f and normaliser C(x) (Sec. 3.2):
  * "embedded_gaussian" (Eq. 3, the default): f = exp(theta(x_i)^T phi(x_j)), C(x) = sum_j f, i.e.
    y = softmax_j(theta^T phi) g, theta = W_theta x, phi = W_phi x (1x1 convs, C -> C').
  * "gaussian" (Eq. 2): f = exp(x_i^T x_j), C(x) = sum_j f (no theta/phi).
  * "dot_product" (Eq. 4): f = theta(x_i)^T phi(x_j), C(x) = M (the number of positions j).
  * "concatenation" (Eq. 5): f = ReLU(w_f^T [theta(x_i), phi(x_j)]), C(x) = M. Since w_f^T [a, b] =
    w_f,theta^T a + w_f,phi^T b, the [N, M] map is built from two projections, never an [N, M, 2C'] tensor.
- Eq. 6: z_i = W_z y_i + x_i (W_z a 1x1 conv, C' -> C; residual connection).
- Sec. 3.3 "subsampling": optional 2x2 max pooling after phi and g (key/value positions only).

The 1x1 convolutions carry biases, as in the authors' released code. The paper's experiments add
BatchNorm after W_z (scale initialised to zero, so a fresh block is the identity); that BN is a
training device and is left out here: the block returns Eq. 6 exactly, which is more informative to
run. (timm's NonLocalAttn with its BN at identity statistics and use_scale=False is the same map.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec

PAIRWISE = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")


class NonLocalBlock(nn.Module):
    def __init__(self, channels: int, reduction: int = 2, pairwise: str = "embedded_gaussian",
                 subsample: bool = False):
        super().__init__()
        inner = channels // reduction
        self.pairwise = pairwise
        self.subsample = subsample
        if pairwise != "gaussian":
            self.theta = nn.Conv2d(channels, inner, 1)
            self.phi = nn.Conv2d(channels, inner, 1)
        if pairwise == "concatenation":
            self.w_f = nn.Linear(2 * inner, 1, bias=False)  # w_f in Eq. 5
        self.g = nn.Conv2d(channels, inner, 1)
        self.w_z = nn.Conv2d(inner, channels, 1)

    def _keys(self, t: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(t, 2) if self.subsample else t

    def forward(self, x: torch.Tensor, need_weights: bool = True) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        v = self._keys(self.g(x)).flatten(2).transpose(1, 2)                 # g(x_j): [B, M, C']
        if self.pairwise == "gaussian":
            q = x.flatten(2).transpose(1, 2)                                  # x_i: [B, N, C]
            k = self._keys(x).flatten(2).transpose(1, 2)                      # x_j: [B, M, C]
        else:
            q = self.theta(x).flatten(2).transpose(1, 2)                      # theta(x_i): [B, N, C']
            k = self._keys(self.phi(x)).flatten(2).transpose(1, 2)            # phi(x_j): [B, M, C']
        m = k.shape[1]
        attn = None
        if self.pairwise in ("embedded_gaussian", "gaussian"):
            if need_weights:
                attn = torch.softmax(q @ k.transpose(1, 2), dim=-1)           # Eqs. 2/3: f / C(x)
                y = attn @ v                                                  # Eq. 1
            else:
                y = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]
        elif self.pairwise == "dot_product":
            attn = (q @ k.transpose(1, 2)) / m                                # Eq. 4, C(x) = M
            y = attn @ v
        else:
            d = q.shape[-1]
            wq, wk = self.w_f.weight[0, :d], self.w_f.weight[0, d:]
            attn = torch.relu((q @ wq)[:, :, None] + (k @ wk)[:, None, :]) / m  # Eq. 5, C(x) = M
            y = attn @ v
        y = y.transpose(1, 2).reshape(b, -1, h, w)
        out = {"output": self.w_z(y) + x}                                     # Eq. 6
        if attn is not None:
            out["attention"] = attn
        return out


def _check(shapes, params):
    _, c, h, w = shapes["x"]
    problems = []
    if c // params["reduction"] < 1:
        problems.append(f"C={c} is smaller than reduction={params['reduction']}: no inner channels")
    if params["subsample"] and (h < 2 or w < 2):
        problems.append(f"subsample needs H >= 2 and W >= 2 for the 2x2 max pooling, got H={h}, W={w}")
    return problems


MECHANISM = Mechanism(
    slug="non-local",
    title="Non-local block (space-only): pairwise f, normalised aggregation of g, W_z + residual",
    reference="Wang et al., CVPR 2018, Eqs. 1-6 and Sec. 3.3",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "z = W_z y + x (Eq. 6)"),
             OutputSpec("attention", ("B", "N", "M"),
                        "normalised pairwise weights f(x_i, x_j) / C(x); N = H*W queries, M key positions",
                        attention=True)),
    hyperparams=(
        HyperParam("reduction", "int", 2, "inner channels C' = C // reduction (paper: C/2)", 1, 1024),
        HyperParam("pairwise", "choice", "embedded_gaussian", "pairwise function f (Sec. 3.2)",
                   choices=PAIRWISE),
        HyperParam("subsample", "bool", False, "2x2 max pooling after phi and g (Sec. 3.3)"),
    ),
    build=lambda shapes, p: NonLocalBlock(shapes["x"][1], p["reduction"], p["pairwise"], p["subsample"]),
    example_shapes={"x": (2, 16, 6, 5)},
    test_shapes=({"x": (1, 8, 3, 7)}, {"x": (3, 6, 1, 1)}),
    constraints=("C // reduction >= 1", "H >= 2 and W >= 2 when subsample is true"),
    check=_check,
    notes="The BatchNorm the paper adds after W_z for training is omitted (see docstring). With "
          "need_weights=False the softmax variants use scaled_dot_product_attention (scale 1).",
)
