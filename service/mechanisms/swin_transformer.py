"""Swin Transformer block: (shifted-)window multi-head self-attention with relative position bias.

Liu, Lin, Cao, Hu, Wei, Zhang, Lin, Guo, "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows", ICCV 2021. The survey's entry is the whole architecture; this is the block that
defines it (Sec. 3.1 "Swin Transformer block", Sec. 3.2).

Shapes: x [B, C, H, W] -> output [B, C, H, W]; attention [B, nW, h, M^2, M^2] with nW = (H/M)(W/M)
windows of M x M tokens, h = C / head_dim heads.
- Eq. 3, first half: z' = (S)W-MSA(LN(z)) + z;  second half: z = MLP(LN(z')) + z' (GELU, ratio 4).
- W-MSA: the map is split into non-overlapping M x M windows; self-attention runs inside each.
- SW-MSA (Sec. 3.2 "Shifted window partitioning", "Efficient batch computation"): the map is rolled
  by (-floor(M/2), -floor(M/2)) (cyclic shift), partitioned into windows, a mask keeps each token from
  attending to tokens of a different sub-window (tokens brought together only by the roll), and the
  result is rolled back.
- Eq. 4: Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V, with B taken from a learned table
  B_hat of size (2M-1) x (2M-1) per head, indexed by the relative offset of the two tokens.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .heads import divisible, scaled_dot_product


def relative_position_index(m: int) -> torch.Tensor:
    """[M^2, M^2] index into the (2M-1)^2 bias table for every pair of tokens of a window."""
    ii, jj = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
    coords = torch.stack([ii.flatten(), jj.flatten()])            # [2, M^2]
    rel = coords[:, :, None] - coords[:, None, :] + (m - 1)        # offsets shifted to [0, 2M-2]
    return rel[0] * (2 * m - 1) + rel[1]


def shift_mask(h: int, w: int, m: int, s: int) -> torch.Tensor:
    """[nW, M^2, M^2] boolean: True where two tokens of a shifted window come from the same sub-window."""
    label = torch.zeros(h, w, dtype=torch.long)
    count = 0
    for rows in (slice(0, h - m), slice(h - m, h - s), slice(h - s, h)):
        for cols in (slice(0, w - m), slice(w - m, w - s), slice(w - s, w)):
            label[rows, cols] = count
            count += 1
    windows = label.reshape(h // m, m, w // m, m).permute(0, 2, 1, 3).reshape(-1, m * m)
    return windows[:, :, None] == windows[:, None, :]


class SwinBlock(nn.Module):
    def __init__(self, channels: int, height: int, width: int, window_size: int = 7, head_dim: int = 32,
                 shifted: bool = True, mlp_ratio: int = 4):
        super().__init__()
        m = window_size
        self.m = m
        self.heads = channels // head_dim
        # as in the official code, no shift when one window already covers the shorter side
        self.shift = m // 2 if shifted and min(height, width) > m else 0
        self.norm1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * m - 1) ** 2, self.heads))  # B_hat
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.norm2 = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, mlp_ratio * channels)
        self.fc2 = nn.Linear(mlp_ratio * channels, channels)
        self.register_buffer("relative_position_index", relative_position_index(m), persistent=False)
        if self.shift:
            self.register_buffer("attn_mask", shift_mask(height, width, m, self.shift), persistent=False)
        else:
            self.attn_mask = None

    def window_attention(self, x: torch.Tensor, need_weights: bool = True):
        """x [B, H, W, C] (already normalised) -> (S)W-MSA(x) [B, H, W, C], weights [B, nW, h, M^2, M^2]."""
        b, h, w, c = x.shape
        m, s, heads = self.m, self.shift, self.heads
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))                          # cyclic shift
        nw = (h // m) * (w // m)
        win = x.reshape(b, h // m, m, w // m, m, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nw, m * m, c)
        q, k, v = self.qkv(win).reshape(b, nw, m * m, 3, heads, c // heads).permute(3, 0, 1, 4, 2, 5)
        bias = self.relative_position_bias_table[self.relative_position_index]      # [M^2, M^2, h]
        bias = bias.permute(2, 0, 1)[None, None]                                    # [1, 1, h, M^2, M^2]
        mask = None if self.attn_mask is None else self.attn_mask[None, :, None]    # [1, nW, 1, M^2, M^2]
        out, weights = scaled_dot_product(q, k, v, need_weights=need_weights,
                                          bias=bias.expand(b, nw, heads, m * m, m * m), mask=mask)  # Eq. 4
        out = out.transpose(2, 3).reshape(b, nw, m * m, c)
        out = self.proj(out)
        out = out.reshape(b, h // m, w // m, m, m, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if s:
            out = torch.roll(out, shifts=(s, s), dims=(1, 2))                        # reverse shift
        return out, weights

    def forward(self, x: torch.Tensor, need_weights: bool = True) -> dict[str, torch.Tensor]:
        z = x.permute(0, 2, 3, 1)                                                    # [B, H, W, C]
        a, weights = self.window_attention(self.norm1(z), need_weights=need_weights)
        z = z + a                                                                    # Eq. 3, z'
        z = z + self.fc2(F.gelu(self.fc1(self.norm2(z))))                           # Eq. 3, MLP
        out = {"output": z.permute(0, 3, 1, 2)}
        if weights is not None:
            out["attention"] = weights
        return out


def _check(shapes, params):
    _, c, h, w = shapes["x"]
    m = params["window_size"]
    problems = []
    if h % m or w % m:
        problems.append(f"H={h} and W={w} must both be divisible by window_size={m}")
    problems += divisible("C", c, "head_dim", params["head_dim"])
    return problems


MECHANISM = Mechanism(
    slug="swin-transformer",
    title="Swin Transformer block: (shifted-)window multi-head self-attention with relative position bias "
          "and the cyclic-shift mask, plus MLP (the block that defines the architecture)",
    reference="Liu et al., ICCV 2021, Eq. 3 (block), Eq. 4 (attention with relative position bias), "
              "Sec. 3.2 (shifted windows, cyclic shift and masking)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "block output"),
             OutputSpec("attention", ("B", "nW", "heads", "M2", "M2"),
                        "attention inside each M x M window (windows in raster order of the shifted map; "
                        "masked pairs are 0, rows sum to 1)", attention=True)),
    hyperparams=(
        HyperParam("window_size", "int", 7, "window side M (7 in the paper); must divide H and W", 1, 64),
        HyperParam("head_dim", "int", 32, "query dimension per head d (32 in the paper); heads = C / head_dim",
                   1, 4096),
        HyperParam("shifted", "bool", True, "SW-MSA (shift by floor(M/2)) instead of W-MSA"),
        HyperParam("mlp_ratio", "int", 4, "MLP expansion alpha (4 in the paper)", 1, 16),
    ),
    build=lambda shapes, p: SwinBlock(shapes["x"][1], shapes["x"][2], shapes["x"][3], p["window_size"],
                                      p["head_dim"], p["shifted"], p["mlp_ratio"]),
    example_shapes={"x": (2, 64, 14, 14)},
    test_shapes=({"x": (1, 32, 21, 14)}, {"x": (3, 96, 7, 7)}),
    constraints=("H and W divisible by window_size", "C divisible by head_dim"),
    check=_check,
    notes="One block; in the network W-MSA and SW-MSA blocks alternate (choose with `shifted`). Masked "
          "pairs get -inf (weight exactly 0) where the official code adds -100. As in the official code the "
          "shift is dropped when min(H, W) equals the window size. qkv has a bias, LayerNorm eps 1e-5, "
          "dropout and stochastic depth omitted (inference).",
)
