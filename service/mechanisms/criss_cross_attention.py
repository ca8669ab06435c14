"""Criss-cross attention (CCA), applied recurrently (RCCA).

Huang, Wang, Huang, Huang, Wei, Liu, "CCNet: Criss-Cross Attention for Semantic Segmentation",
ICCV 2019 (extended in TPAMI 2020).

Shapes: x [B, C, H, W] -> output [B, C, H, W], attention [B, R, H, W, H+W-1].
- Q = conv1x1(x), K = conv1x1(x): [B, C', H, W] with C' = C // reduction (C/8 in the released code);
  V = conv1x1(x): [B, C, H, W].
- Affinity (Sec. 3.2): d_{i,u} = Q_u Omega_{i,u}^T, where Omega_u [H+W-1, C'] are the keys on the
  criss-cross path of u (same column, then same row; u itself counted once); A = softmax over i.
- Aggregation (Eq. 2): H'_u = sum_i A_{i,u} Phi_{i,u} + H_u, Phi_u [H+W-1, C] the values on the path.
- Recurrence (Sec. 3.3): RCCA applies the same CCA module R times (shared weights), H -> H' -> H'',
  so that every position gathers context from the whole image when R = 2.

Layout of the returned attention's last axis: the H-1 positions of u's column other than u (top to
bottom), followed by the W positions of u's row (left to right, u included); one map per loop r.
Eq. 2 has no learnable scale; the released code multiplies the aggregate by a zero-initialised
gamma, which is left out here.
"""

from __future__ import annotations

import torch
from torch import nn

from ._matrix import off_diagonal
from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class CrissCrossAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 8, recurrence: int = 2):
        super().__init__()
        inner = channels // reduction
        self.recurrence = recurrence
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)

    def cca(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        q, k, v = self.query(x), self.key(x), self.value(x)
        e_col = torch.einsum("bchw,bcgw->bhwg", q, k)                      # d with keys in u's column
        e_row = torch.einsum("bchw,bchv->bhwv", q, k)                      # d with keys in u's row
        self_in_col = torch.eye(h, dtype=torch.bool, device=x.device)[:, None, :]  # [H, 1, H]
        e_col = e_col.masked_fill(self_in_col, float("-inf"))             # u is counted once (in the row)
        a = torch.softmax(torch.cat([e_col, e_row], dim=-1), dim=-1)      # A over the H+W path
        a_col, a_row = a[..., :h], a[..., h:]
        agg = torch.einsum("bhwg,bcgw->bchw", a_col, v) + torch.einsum("bhwv,bchv->bchw", a_row, v)
        out = agg + x                                                      # Eq. 2
        a_col = off_diagonal(a_col.transpose(1, 2)).transpose(1, 2)      # drop u itself from its column
        return out, torch.cat([a_col, a_row], dim=-1)                      # [B, H, W, H+W-1]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = []
        for _ in range(self.recurrence):                                   # RCCA, shared weights
            x, a = self.cca(x)
            maps.append(a)
        return {"output": x, "attention": torch.stack(maps, dim=1)}


def _check(shapes, params):
    c = shapes["x"][1]
    return [] if c // params["reduction"] >= 1 else [
        f"C={c} is smaller than reduction={params['reduction']}: queries/keys would have no channels"]


MECHANISM = Mechanism(
    slug="criss-cross-attention",
    title="Criss-cross attention module, applied recurrently with shared weights (RCCA)",
    reference="Huang et al., ICCV 2019, Sec. 3.2 (affinity, Eq. 2) and Sec. 3.3 (recurrence)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "H'' after R criss-cross passes"),
             OutputSpec("attention", ("B", "R", "H", "W", "P"),
                        "A per loop over the P = H+W-1 positions of the criss-cross path (column without "
                        "u, then row)", attention=True)),
    hyperparams=(
        HyperParam("reduction", "int", 8, "query/key channels C' = C // reduction", 1, 1024),
        HyperParam("recurrence", "int", 2, "number of criss-cross passes R (paper: 2)", 1, 8),
    ),
    build=lambda shapes, p: CrissCrossAttention(shapes["x"][1], p["reduction"], p["recurrence"]),
    example_shapes={"x": (2, 16, 5, 6)},
    test_shapes=({"x": (1, 8, 7, 3)}, {"x": (3, 8, 1, 1)}),
    constraints=("C // reduction >= 1",),
    check=_check,
    notes="Eq. 2 without the zero-initialised gamma of the released code.",
)
