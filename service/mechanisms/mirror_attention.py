"""Mirror attention with region pooling for one candidate line per sample (DRM's D-Net).

Jin, Lee, Kim, "Semantic Line Detection Using Mirror Attention and Comparative Ranking and
Matching", ECCV 2020 (arXiv:2007.08139).

Inputs: x [B, C, H, W] and a candidate line [B, 4] = (x1, y1, x2, y2), two points in normalised
image coordinates (-1 = centre of the first pixel, +1 = centre of the last, as grid_sample with
align_corners=True; x along W, y along H). Outputs: Y [B, C, H, W] ("output"), the two region
features [B, 2, C], the mirror attention map A [B, H, W] and the line band G [B, H, W].
In pixel coordinates the line is l(p) = a u + b v + c = 0 through the two points.
- Line band: the two sides are S_1 = {l < 0}, S_2 = {l > 0}; the line pixels are where the 4-neighbour
  Laplacian of the S_1 indicator (replicate padding) is non-zero; G is that mask blurred with a
  normalised k x k Gaussian (replicate padding) and divided by its maximum.
- Band features: X~ = G * X.
- Reflection: R(p) = p - 2 l(p) (a, b) / (a^2 + b^2) (the mirror image of pixel p about the line);
  X~^m(p) = X~(R(p)) by bilinear sampling (zeros outside the image).
- Mirror attention: A = sigmoid(conv7(relu(conv7(relu(conv3([X~; X~^m])))))), convs without bias
  (2C -> 1 channel with 3x3, then two 1 -> 1 7x7), as in the authors' Mirror_Attention module.
- Residual: Y = X~ + X~ * A.
- Region pooling: r_k = sum_{p in Omega_k} Y(p) / |Omega_k|, Omega_k = S_k restricted to the band
  (G > 0); the detector concatenates r_1, r_2 for its classification/regression heads.
The paper page was not available; the steps follow the authors' released D-Net code (Region_Pooling_
Module, Mirror_Attention). Differences: the reflection is done in pixel coordinates (a true mirror
image also when H != W; the code reflects in normalised coordinates, identical for square maps), and
a degenerate line (two equal points) reflects every pixel onto itself instead of dividing by zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


def gaussian_kernel(size: int, sigma: float, dtype, device) -> torch.Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    return (g / g.sum())[None, None]


class MirrorAttention(nn.Module):
    def __init__(self, channels: int, blur_kernel: int = 5, blur_sigma: float = 5.0):
        super().__init__()
        self.blur_kernel, self.blur_sigma = blur_kernel, blur_sigma
        self.conv1 = nn.Conv2d(2 * channels, 1, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(1, 1, 7, padding=3, bias=False)
        self.conv3 = nn.Conv2d(1, 1, 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor, line: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        scale = torch.tensor([w - 1, h - 1], dtype=x.dtype, device=x.device)
        p1, p2 = (line[:, :2] + 1) / 2 * scale, (line[:, 2:] + 1) / 2 * scale        # pixel coordinates
        la, lb = p2[:, 1] - p1[:, 1], p1[:, 0] - p2[:, 0]                              # normal (a, b)
        lc = -(la * p1[:, 0] + lb * p1[:, 1])
        u = torch.arange(w, dtype=x.dtype, device=x.device)[None, None, :]
        v = torch.arange(h, dtype=x.dtype, device=x.device)[None, :, None]
        lval = la[:, None, None] * u + lb[:, None, None] * v + lc[:, None, None]      # l(p): [B, H, W]
        side1, side2 = (lval < 0).to(x.dtype), (lval > 0).to(x.dtype)
        lap = torch.tensor([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=x.dtype, device=x.device)
        edge = F.conv2d(F.pad(side1[:, None], (1, 1, 1, 1), mode="replicate"), lap[None, None])
        line_mask = (edge != 0).to(x.dtype)
        pad = self.blur_kernel // 2
        kern = gaussian_kernel(self.blur_kernel, self.blur_sigma, x.dtype, x.device)
        band = F.conv2d(F.pad(line_mask, (pad, pad, pad, pad), mode="replicate"), kern)
        band = band / (band.flatten(1).max(dim=1).values[:, None, None, None] + 1e-9)  # G: [B, 1, H, W]
        xb = band * x                                                                  # X~
        norm2 = (la ** 2 + lb ** 2).clamp_min(1e-12)[:, None, None]
        ru = u - 2 * la[:, None, None] * lval / norm2                                  # R(p)
        rv = v - 2 * lb[:, None, None] * lval / norm2
        # bilinear sampling with zeros outside: sample a copy with a one-pixel zero border, so that
        # even a 1-pixel-wide map has a well-defined normalisation (align_corners=True)
        grid = torch.stack([(ru + 1) / (w + 1) * 2 - 1, (rv + 1) / (h + 1) * 2 - 1], dim=-1)
        xm = F.grid_sample(F.pad(xb, (1, 1, 1, 1)), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=True)                                          # X~^m
        a = torch.sigmoid(self.conv3(F.relu(self.conv2(F.relu(self.conv1(torch.cat([xb, xm], 1)))))))
        y = xb + xb * a
        feats = []
        for side in (side1, side2):
            region = (side[:, None] * band != 0).to(x.dtype)
            feats.append((y * region).sum((2, 3)) / (region.sum((2, 3)) + 1e-9))
        return {"output": y, "region_features": torch.stack(feats, dim=1), "attention": a[:, 0],
                "line_band": band[:, 0]}


def _check(shapes, params):
    return [] if params["blur_kernel"] % 2 == 1 else [f"blur_kernel={params['blur_kernel']} must be odd"]


MECHANISM = Mechanism(
    slug="mirror-attention",
    title="Mirror attention for a candidate line: line band, reflection about the line, conv-sigmoid "
          "attention, residual, two-sided region pooling",
    reference="Jin, Lee & Kim, ECCV 2020 (DRM D-Net mirror attention and region pooling, as released)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),
            InputSpec("line", ("B", "4"), "candidate line (x1, y1, x2, y2) in normalised coordinates [-1, 1]")),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "Y = X~ + X~ * A"),
             OutputSpec("region_features", ("B", "2", "C"), "average of Y over the band on each side"),
             OutputSpec("attention", ("B", "H", "W"), "mirror attention map A in (0, 1)", attention=True),
             OutputSpec("line_band", ("B", "H", "W"), "blurred line mask G (max 1)", attention=True)),
    hyperparams=(
        HyperParam("blur_kernel", "int", 5, "size of the Gaussian blur of the line mask (odd)", 1, 31),
        HyperParam("blur_sigma", "float", 5.0, "sigma of that Gaussian (code: 5)", 0.1, 100.0),
    ),
    build=lambda shapes, p: MirrorAttention(shapes["x"][1], p["blur_kernel"], p["blur_sigma"]),
    example_shapes={"x": (2, 8, 7, 6), "line": (2, 4)},
    test_shapes=({"x": (1, 4, 5, 9), "line": (1, 4)}, {"x": (3, 2, 1, 1), "line": (3, 4)}),
    constraints=("blur_kernel odd",),
    check=_check,
    notes="Equations reconstructed from the authors' released code; reflection in pixel coordinates; "
          "one line per sample (the detector evaluates many candidate lines by batching them).",
)
