"""Multi-spectral channel attention (FcaNet).

Qin, Zhang, Wu, Li, "FcaNet: Frequency Channel Attention Networks", ICCV 2021.

Shapes: x [B, C, H, W] -> output [B, C, H, W], weights [B, C].
- If H x W differs from the DCT size h x w, x is first average-pooled to h x w (released code; the
  ImageNet models use h = w = H = W).
- 2-D DCT basis (Eq. 1 / Eq. 7): B^{u,v}_{i,j} = cos(pi*u/h*(i + 1/2)) * cos(pi*v/w*(j + 1/2)), with the
  orthonormal DCT-II scaling of the released code (1/sqrt(h), times sqrt(2) for u > 0; same for v).
- Channels split into n parts [X^0, ..., X^{n-1}], each of C/n channels; part i is compressed with its
  own frequency (u_i, v_i) (Eq. 8): Freq^i = sum_{i',j'} X^i_{:, i', j'} B^{u_i, v_i}_{i', j'}   -> [B, C/n] each
- Freq = cat(Freq^0, ..., Freq^{n-1})                                                         -> [B, C]
- ms_att = sigmoid(fc(Freq)), fc = C -> C/r -> C with ReLU, no biases (Eq. 9);  output = x * ms_att.
The n frequency pairs are the paper's 'top-n' (or 'low-n' / 'bot-n') selections on a 7 x 7 grid,
scaled by h//7 for larger DCT sizes, in the order published with the code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec

# Frequency indices (u = along height, v = along width) on a 7x7 grid, ranked as in the released code.
FREQ_INDICES = {
    "top": ([0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1],
            [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3]),
    "low": ([0, 0, 1, 1, 0, 2, 2, 1, 2, 0, 3, 4, 0, 1, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4],
            [0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 0, 4, 3, 1, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3]),
    "bot": ([6, 1, 3, 3, 2, 4, 1, 2, 4, 4, 5, 1, 4, 6, 2, 5, 6, 1, 6, 2, 2, 4, 3, 3, 5, 5, 6, 2, 5, 5, 3, 6],
            [6, 4, 4, 6, 6, 3, 1, 4, 4, 5, 6, 5, 2, 2, 5, 1, 4, 3, 5, 0, 3, 1, 1, 2, 4, 2, 1, 1, 5, 3, 3, 3]),
}


def dct_basis_1d(freq: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """[n, size]: cos(pi * f * (t + 1/2) / size) / sqrt(size), times sqrt(2) where f > 0."""
    t = torch.arange(size, dtype=dtype, device=freq.device)
    f = freq.to(dtype)
    basis = torch.cos(math.pi * f[:, None] * (t[None, :] + 0.5) / size) / math.sqrt(size)
    return basis * (1.0 + (math.sqrt(2.0) - 1.0) * (freq > 0).to(dtype))[:, None]


class FrequencyChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, num_freq: int = 16, selection: str = "top",
                 dct_size: int = 7):
        super().__init__()
        self.dct_size = dct_size
        us, vs = FREQ_INDICES[selection]
        scale = dct_size // 7
        u = torch.tensor(us[:num_freq]) * scale
        v = torch.tensor(vs[:num_freq]) * scale
        # integer frequency indices per channel (a derived constant, not a client weight); the cosine
        # filters are evaluated in the input's dtype at run time so float64 runs are exact
        self.register_buffer("freq_u", u.repeat_interleave(channels // num_freq), persistent=False)
        self.register_buffer("freq_v", v.repeat_interleave(channels // num_freq), persistent=False)
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def dct_filter(self, dtype: torch.dtype) -> torch.Tensor:
        """[C, h, w]: B^{u_c, v_c} for the frequency pair assigned to each channel (Eq. 7)."""
        n = self.dct_size
        return dct_basis_1d(self.freq_u, n, dtype)[:, :, None] * dct_basis_1d(self.freq_v, n, dtype)[:, None, :]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        xp = x
        if x.shape[-2:] != (self.dct_size, self.dct_size):
            xp = F.adaptive_avg_pool2d(x, (self.dct_size, self.dct_size))
        freq = (xp * self.dct_filter(x.dtype)).sum(dim=(2, 3))                        # Eq. 8, cat of parts
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(freq))))             # Eq. 9
        return {"output": x * w[:, :, None, None], "weights": w}


def _check(shapes, params):
    c = shapes["x"][1]
    problems = []
    if c % params["num_freq"]:
        problems.append(f"C={c} must be divisible by num_freq={params['num_freq']}")
    if c // params["reduction"] < 1:
        problems.append(f"C={c} is smaller than reduction={params['reduction']}")
    return problems


MECHANISM = Mechanism(
    slug="frequency-channel-attention",
    title="FcaNet multi-spectral channel attention: per-channel-group 2-D DCT frequency pooling, SE-style gate",
    reference="Qin et al., ICCV 2021, Eqs. 1 and 7-9 (multi-spectral channel attention)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "recalibrated feature map"),
             OutputSpec("weights", ("B", "C"), "channel gate ms_att in (0, 1)", attention=True)),
    hyperparams=(
        HyperParam("reduction", "int", 16, "reduction ratio r of the fc layers", 1, 1024),
        HyperParam("num_freq", "choice", 16, "number n of frequency components (channel parts)",
                   choices=(1, 2, 4, 8, 16, 32)),
        HyperParam("selection", "choice", "top", "frequency selection criterion of the paper",
                   choices=("top", "low", "bot")),
        HyperParam("dct_size", "int", 7, "DCT size h = w; inputs of another size are average-pooled to it",
                   7, 112),
    ),
    build=lambda shapes, p: FrequencyChannelAttention(shapes["x"][1], p["reduction"], p["num_freq"],
                                                      p["selection"], p["dct_size"]),
    example_shapes={"x": (2, 32, 7, 7)},
    test_shapes=({"x": (1, 16, 5, 3)}, {"x": (3, 64, 14, 14)}),
    constraints=("C divisible by num_freq", "C // reduction >= 1"),
    check=_check,
    notes="DCT filters are a fixed (non-learnable) buffer; the FcaNet ResNet models use dct_size 56/28/14/7 "
          "for the four stages, here a hyper-parameter.",
)
