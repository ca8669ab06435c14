"""PiCANet: pixel-wise contextual attention (global and local forms).

Liu, Han, Yang, "PiCANet: Learning Pixel-wise Contextual Attention for Saliency Detection", CVPR 2018
(Sec. 3.1 global PiCANet, Sec. 3.2 local PiCANet).

Shapes: x [B, C, H, W] -> output [B, C, H, W] (attended contextual features F_att); attention [B, H, W, D]
(for each pixel w, its distribution alpha^w over the D context locations).
- Attention (Eqs. 1-2 / 3): alpha^w_i = exp(x^w_i) / sum_j exp(x^w_j);  F^w_att = sum_i alpha^w_i f_i.
- Global (Sec. 3.1): a ReNet (a bidirectional LSTM sweeping every row, then one sweeping every column of
  the result) gives each pixel a view of the whole map; a 1 x 1 convolution predicts the D logits x^w.
  The context locations f_i are a G x G grid spread uniformly over the map (the paper uses 10 x 10 with
  dilation 3 on its 28 x 28 maps: rows / columns floor(i (H-1) / (G-1))); G = 0 uses all H x W positions.
- Local (Sec. 3.2): a 7 x 7 convolution with dilation 2 (+ ReLU) and a 1 x 1 convolution predict D = k^2
  logits per pixel; the context is the k x k neighbourhood with dilation 2 (zero padded).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


def grid_index(n: int, g: int, device=None) -> torch.Tensor:
    return torch.div(torch.arange(g, device=device) * (n - 1), max(g - 1, 1), rounding_mode="floor")


class PiCANet(nn.Module):
    def __init__(self, channels: int, height: int, width: int, mode: str = "global", grid_size: int = 10,
                 lstm_hidden: int = 256, kernel_size: int = 7, dilation: int = 2, conv_channels: int = 128):
        super().__init__()
        self.mode = mode
        self.grid_size = grid_size
        self.k = kernel_size
        self.dilation = dilation
        if mode == "global":
            self.renet_h = nn.LSTM(channels, lstm_hidden, batch_first=True, bidirectional=True)
            self.renet_v = nn.LSTM(2 * lstm_hidden, lstm_hidden, batch_first=True, bidirectional=True)
            d = grid_size * grid_size if grid_size else height * width
            self.logits = nn.Conv2d(2 * lstm_hidden, d, 1)
        else:
            self.conv = nn.Conv2d(channels, conv_channels, kernel_size, padding=dilation * (kernel_size // 2),
                                  dilation=dilation)
            self.logits = nn.Conv2d(conv_channels, kernel_size * kernel_size, 1)

    def _global(self, x):
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b * h, w, c)                         # sweep along each row
        r, _ = self.renet_h(rows)
        cols = r.reshape(b, h, w, -1).transpose(1, 2).reshape(b * w, h, -1)        # then along each column
        v, _ = self.renet_v(cols)
        feat = v.reshape(b, w, h, -1).permute(0, 3, 2, 1)                          # [B, 2 hidden, H, W]
        alpha = self.logits(feat).permute(0, 2, 3, 1).softmax(-1)                  # [B, H, W, D]
        if self.grid_size:
            gi, gj = grid_index(h, self.grid_size, x.device), grid_index(w, self.grid_size, x.device)
            context = x[:, :, gi][:, :, :, gj].flatten(2)                          # [B, C, G^2]
        else:
            context = x.flatten(2)                                                  # [B, C, HW]
        out = torch.einsum("bhwd,bcd->bchw", alpha, context)
        return out, alpha

    def _local(self, x):
        b, c, h, w = x.shape
        alpha = self.logits(torch.relu(self.conv(x))).permute(0, 2, 3, 1).softmax(-1)   # [B, H, W, k^2]
        pad = self.dilation * (self.k // 2)
        context = F.unfold(x, self.k, dilation=self.dilation, padding=pad).reshape(b, c, self.k ** 2, h, w)
        out = torch.einsum("bhwd,bcdhw->bchw", alpha, context)
        return out, alpha

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out, alpha = self._global(x) if self.mode == "global" else self._local(x)
        return {"output": out, "attention": alpha}


def _check(shapes, params):
    _, _, h, w = shapes["x"]
    g = params["grid_size"]
    if params["mode"] == "global" and g > min(h, w):
        return [f"grid_size={g} exceeds min(H, W)={min(h, w)}: the context grid would repeat locations"]
    return []


MECHANISM = Mechanism(
    slug="pixel-wise-contextual-attention",
    title="PiCANet: per-pixel softmax attention over context locations; global form (ReNet biLSTMs + 1x1 conv, "
          "context on a grid over the whole map) or local form (dilated conv, dilated k x k neighbourhood)",
    reference="Liu, Han, Yang, CVPR 2018, Sec. 3.1 (global PiCANet, Eqs. 1-2) and Sec. 3.2 (local PiCANet, Eq. 3)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "attended contextual feature map F_att"),
             OutputSpec("attention", ("B", "H", "W", "D"), "per-pixel attention over its D context locations "
                        "(global: grid positions in raster order; local: dilated k x k offsets)", attention=True)),
    hyperparams=(
        HyperParam("mode", "choice", "global", "global or local PiCANet", choices=("global", "local")),
        HyperParam("grid_size", "int", 10, "global: side G of the context grid (10 in the paper); 0 = all HW "
                   "positions", 0, 64),
        HyperParam("lstm_hidden", "int", 256, "global: hidden units per direction of the ReNet LSTMs", 1, 2048),
        HyperParam("kernel_size", "int", 7, "local: neighbourhood side k (7 in the paper)", 1, 15),
        HyperParam("dilation", "int", 2, "local: dilation of the neighbourhood and of the logit convolution "
                   "(2 in the paper)", 1, 8),
        HyperParam("conv_channels", "int", 128, "local: channels of the 7 x 7 logit convolution", 1, 2048),
    ),
    build=lambda shapes, p: PiCANet(shapes["x"][1], shapes["x"][2], shapes["x"][3], p["mode"], p["grid_size"],
                                    p["lstm_hidden"], p["kernel_size"], p["dilation"], p["conv_channels"]),
    example_shapes={"x": (2, 8, 12, 10)},
    test_shapes=({"x": (1, 3, 10, 17)}, {"x": (3, 16, 28, 28)}),
    constraints=("global mode: grid_size <= min(H, W)",),
    check=_check,
    notes="Global context grid: rows/columns floor(i (H-1)/(G-1)), which is exactly the paper's 10 x 10 grid with "
          "dilation 3 on a 28 x 28 map and spreads uniformly on other sizes. Local form: one 7 x 7 dilated "
          "convolution + ReLU before the 1 x 1 logit convolution; context outside the map is zero padding "
          "(it still receives weight), as with the unfold used by the authors. The U-Net decoder, batch norm "
          "and the concatenation with the decoder features are not part of the module.",
)
