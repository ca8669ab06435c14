"""Deformable Attention Transformer (DAT) block: deformable multi-head self-attention + MLP.

Xia, Pan, Song, Li, Huang, "Vision Transformer with Deformable Attention", CVPR 2022. The survey's entry
is the whole architecture; this is the block that defines it (Sec. 3.2 deformable attention inside a
pre-norm Transformer block, Sec. 3.4).

Shapes: x [B, C, H, W] -> output [B, C, H, W]; attention [B, h, HW, Ns]; sampled_locations
[B, G, Hk, Wk, 2] with Hk = H / r, Wk = W / r, Ns = Hk Wk, h = C / head_dim heads, G offset groups.
- Reference points p: a uniform Hk x Wk grid (cell centres of an r x r tiling of the map), normalised
  to [-1, +1] (-1 = left / top border of the map).
- Eq. 7: q = x W_q; Delta p = theta_offset(q); x~ = phi(x; p + Delta p).
  theta_offset runs on each group of C/G query channels (weights shared by the groups): k x k depthwise
  convolution with stride r, LayerNorm, GELU, 1 x 1 convolution to 2 channels without bias; the offsets
  are bounded as Delta p = s * tanh(.) (s = offset_range, in reference-grid steps). phi is bilinear
  sampling with zero padding; group g samples its own C/G channels of x at its own points.
- Eq. 8: k~ = x~ W_k, v~ = x~ W_v.
- Eq. 9: z^(m) = softmax(q^(m) k~^(m)T / sqrt(d) + phi(B^; R)) v~^(m): the relative position bias table
  B^ [h, 2H-1, 2W-1] is bilinearly interpolated at the continuous offset R between each query pixel and
  each sampled key point (deformable relative position bias). Head m uses the points of group
  floor(m / (h/G)).
- Eq. 10: z = Concat(z^(1), ..., z^(h)) W_o.
- Block: z' = DMHA(LN(z)) + z; z'' = MLP(LN(z')) + z' (GELU, expansion 4).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .heads import divisible, scaled_dot_product


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dim of a [B, C, H, W] map."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def cell_centres(h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[h, w, 2] centres of an h x w tiling of [-1, 1]^2 as (y, x)."""
    ys = (torch.arange(h, dtype=dtype, device=device) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=dtype, device=device) + 0.5) / w * 2 - 1
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1)


class DeformableAttention(nn.Module):
    def __init__(self, channels: int, height: int, width: int, head_dim: int = 32, groups: int = 2,
                 stride: int = 1, offset_range: float = 2.0, kernel_size: int = 5):
        super().__init__()
        self.heads = channels // head_dim
        self.groups = groups
        self.stride = stride
        self.offset_range = offset_range
        self.size = (height, width)
        gc = channels // groups
        self.proj_q = nn.Linear(channels, channels)   # W_q
        self.proj_k = nn.Linear(channels, channels)   # W_k
        self.proj_v = nn.Linear(channels, channels)   # W_v
        self.proj_out = nn.Linear(channels, channels)  # W_o
        self.offset_dw = nn.Conv2d(gc, gc, kernel_size, stride=stride, padding=kernel_size // 2, groups=gc)
        self.offset_norm = ChannelLayerNorm(gc)
        self.offset_pw = nn.Conv2d(gc, 2, 1, bias=False)
        self.rpe_table = nn.Parameter(torch.empty(self.heads, 2 * height - 1, 2 * width - 1))  # B^
        nn.init.trunc_normal_(self.rpe_table, std=0.01)
    def forward(self, x: torch.Tensor, need_weights: bool = True):
        """x [B, C, H, W] (already normalised) -> (z [B, C, H, W], weights, sampled points)."""
        b, c, h, w = x.shape
        g, heads, gc = self.groups, self.heads, c // self.groups
        hk, wk = h // self.stride, w // self.stride
        reference = cell_centres(hk, wk, x.dtype, x.device)                    # p, [Hk, Wk, 2]
        tokens = x.flatten(2).transpose(1, 2)                                   # [B, HW, C]
        q = self.proj_q(tokens)                                                 # Eq. 7, q = x W_q
        q_map = q.transpose(1, 2).reshape(b * g, gc, h, w)
        off = self.offset_pw(F.gelu(self.offset_norm(self.offset_dw(q_map))))  # theta_offset, [BG, 2, Hk, Wk]
        off = self.offset_range * torch.tanh(off)                               # s tanh(.), grid steps
        step = torch.tensor([2.0 / hk, 2.0 / wk], dtype=x.dtype, device=x.device)
        pos = reference + off.permute(0, 2, 3, 1) * step                   # p + Delta p, [BG, Hk, Wk, 2]
        sampled = F.grid_sample(x.reshape(b * g, gc, h, w), pos.flip(-1), mode="bilinear",
                                padding_mode="zeros", align_corners=False)     # phi(x; p + Delta p)
        sampled = sampled.reshape(b, c, hk * wk).transpose(1, 2)                # x~ [B, Ns, C]
        k = self.proj_k(sampled)                                                # Eq. 8
        v = self.proj_v(sampled)
        d = c // heads
        qh = q.reshape(b, h * w, heads, d).transpose(1, 2)
        kh = k.reshape(b, hk * wk, heads, d).transpose(1, 2)
        vh = v.reshape(b, hk * wk, heads, d).transpose(1, 2)
        # deformable relative position bias phi(B^; R): R = query - key in pixels, mapped onto the table
        queries = cell_centres(h, w, x.dtype, x.device).reshape(1, h * w, 1, 2)
        rel = queries - pos.reshape(b * g, 1, hk * wk, 2)                      # normalised units
        rel = rel * torch.tensor([h / 2.0, w / 2.0], dtype=x.dtype, device=x.device)  # pixels
        scale = torch.tensor([1.0 / max(h - 1, 1), 1.0 / max(w - 1, 1)], dtype=x.dtype, device=x.device)
        table = self.rpe_table[None].expand(b, -1, -1, -1).reshape(b * g, heads // g, 2 * h - 1, 2 * w - 1)
        bias = F.grid_sample(table, (rel * scale).flip(-1), mode="bilinear", padding_mode="zeros",
                             align_corners=True)                                # [BG, h/G, HW, Ns]
        bias = bias.reshape(b, heads, h * w, hk * wk)
        z, weights = scaled_dot_product(qh, kh, vh, need_weights=need_weights, bias=bias)  # Eq. 9
        z = self.proj_out(z.transpose(1, 2).reshape(b, h * w, c))                          # Eq. 10
        return z.transpose(1, 2).reshape(b, c, h, w), weights, pos.reshape(b, g, hk, wk, 2)


class DATBlock(nn.Module):
    def __init__(self, channels: int, height: int, width: int, head_dim: int = 32, groups: int = 2,
                 stride: int = 1, offset_range: float = 2.0, kernel_size: int = 5, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = ChannelLayerNorm(channels)
        self.attn = DeformableAttention(channels, height, width, head_dim, groups, stride, offset_range,
                                        kernel_size)
        self.norm2 = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, mlp_ratio * channels)
        self.fc2 = nn.Linear(mlp_ratio * channels, channels)

    def forward(self, x: torch.Tensor, need_weights: bool = True) -> dict[str, torch.Tensor]:
        h, w = x.shape[2:]
        a, weights, pos = self.attn(self.norm1(x), need_weights=need_weights)
        x = x + a
        t = x.permute(0, 2, 3, 1)
        x = (t + self.fc2(F.gelu(self.fc1(self.norm2(t))))).permute(0, 3, 1, 2)
        out = {"output": x}
        if weights is not None:
            out["attention"] = weights
            # sampled points in pixel coordinates (y, x) of the input map (pixel centres at integers)
            size = torch.tensor([h, w], dtype=x.dtype, device=x.device)
            out["sampled_locations"] = (pos + 1) / 2 * size - 0.5
        return out


def _check(shapes, params):
    _, c, h, w = shapes["x"]
    problems = divisible("C", c, "head_dim", params["head_dim"])
    if not problems:
        problems += divisible("heads (= C / head_dim)", c // params["head_dim"], "groups", params["groups"])
    r = params["stride"]
    if h % r or w % r:
        problems.append(f"H={h} and W={w} must both be divisible by stride={r}")
    if params["kernel_size"] % 2 == 0:
        problems.append(f"kernel_size={params['kernel_size']} must be odd")
    return problems


MECHANISM = Mechanism(
    slug="deformable-attention-transformer",
    title="DAT block: deformable multi-head self-attention (offset network, bilinear key/value sampling, "
          "deformable relative position bias) + MLP (the block that defines the architecture)",
    reference="Xia et al., CVPR 2022, Eqs. 7-10 (Sec. 3.2) and the offset generation / relative position "
              "paragraphs of Sec. 3.2",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "block output"),
             OutputSpec("attention", ("B", "heads", "HW", "Ns"),
                        "attention of every query pixel (raster order) over the Ns = H/r * W/r sampled keys; "
                        "rows sum to 1", attention=True),
             OutputSpec("sampled_locations", ("B", "groups", "Hk", "Wk", "2"),
                        "deformed key points p + Delta p per offset group as (y, x) in input pixel "
                        "coordinates", attention=True)),
    hyperparams=(
        HyperParam("head_dim", "int", 32, "channels per head (32 in DAT); heads = C / head_dim", 1, 4096),
        HyperParam("groups", "int", 2, "offset groups G (heads / G = 4 in DAT's stages 3-4); must divide heads",
                   1, 128),
        HyperParam("stride", "int", 1, "reference-grid downsampling factor r (1 in DAT's stages 3-4)", 1, 64),
        HyperParam("offset_range", "float", 2.0, "offset bound s: Delta p = s tanh(.), in reference-grid steps",
                   0.0, 64.0),
        HyperParam("kernel_size", "int", 5, "depthwise kernel of the offset network (5 x 5 in the paper)", 1, 31),
        HyperParam("mlp_ratio", "int", 4, "MLP expansion", 1, 16),
    ),
    build=lambda shapes, p: DATBlock(shapes["x"][1], shapes["x"][2], shapes["x"][3], p["head_dim"], p["groups"],
                                     p["stride"], p["offset_range"], p["kernel_size"], p["mlp_ratio"]),
    example_shapes={"x": (2, 64, 8, 8)},
    test_shapes=({"x": (1, 64, 5, 7)}, {"x": (3, 128, 6, 4)}),
    constraints=("C divisible by head_dim", "heads divisible by groups", "H and W divisible by stride",
                 "kernel_size odd"),
    check=_check,
    notes="Conventions chosen where the paper leaves them open: reference points are the cell centres of "
          "the r x r tiling and sampling uses align_corners=False, so a point maps to the same pixel for "
          "every r; s is measured in reference-grid steps (the official code scales tanh by s/(Hk-1) in "
          "normalised units, i.e. about s/2 steps); the relative-position table is indexed at the exact "
          "pixel offset. The LayerNorm between the depthwise convolution and the GELU of the offset "
          "network follows the authors' released code (the paper's text names only conv, GELU, conv). "
          "Keys of all heads mix the features sampled by all groups (x~ W_k over the full C), as in the "
          "released code. Dropout and stochastic depth omitted.",
)
