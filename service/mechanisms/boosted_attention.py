"""Boosted Attention: stimulus-based (saliency) attention boosting the features seen by top-down attention.

Chen, Zhao, "Boosted Attention: Leveraging Human Attention for Image Captioning", ECCV 2018, Sec. 3.

Inputs: features V [B, C, H, W] (CNN feature map, L = H*W locations), decoder state h [B, E].
- Stimulus-based attention: S = sigmoid(conv1x1(V)) [B, H, W] (a saliency head on the features; in the paper
  it is a saliency network trained on human fixations)
- Boosting: V~ = V ⊙ log(S + epsilon) (element-wise, broadcast over channels; epsilon = e by default, so the
  factor log(S + e) lies in (1, log(1 + e)): salient positions are amplified, none is suppressed)
- Top-down attention for the current word (additive / Bahdanau form, as in Show-Attend-Tell):
    e_i = w^T tanh(W_v v~_i + W_h h),  alpha = softmax_i(e)
- Context: c = sum_i alpha_i v~_i  [B, C]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class BoostedAttention(nn.Module):
    def __init__(self, channels: int, hidden: int, att_dim: int = 256, epsilon: float = math.e):
        super().__init__()
        self.saliency = nn.Conv2d(channels, 1, 1)
        self.w_v = nn.Linear(channels, att_dim)
        self.w_h = nn.Linear(hidden, att_dim, bias=False)
        self.w = nn.Linear(att_dim, 1, bias=False)
        self.epsilon = epsilon

    def forward(self, features: torch.Tensor, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = features.shape
        s = torch.sigmoid(self.saliency(features))[:, 0]                               # [B, H, W]
        boosted = features * torch.log(s + self.epsilon).unsqueeze(1)                  # V ⊙ log(S + eps)
        v = boosted.flatten(2).transpose(1, 2)                                         # [B, L, C]
        e = self.w(torch.tanh(self.w_v(v) + self.w_h(hidden).unsqueeze(1))).squeeze(-1)   # [B, L]
        alpha = torch.softmax(e, dim=1)
        ctx = (alpha.unsqueeze(-1) * v).sum(1)
        return {"output": ctx, "attention": alpha.reshape(b, h, w), "saliency": s}


MECHANISM = Mechanism(
    slug="boosted-attention",
    title="Boosted attention: saliency-boosted features V*log(S+eps) under additive top-down attention",
    reference="Chen & Zhao, ECCV 2018 (Boosted Attention), Sec. 3",
    inputs=(InputSpec("features", ("B", "C", "H", "W"), "image feature map"),
            InputSpec("hidden", ("B", "E"), "caption decoder (LSTM) state h_{t-1}")),
    outputs=(OutputSpec("output", ("B", "C"), "attended context c_t"),
             OutputSpec("attention", ("B", "H", "W"), "top-down attention alpha (sums to 1)", attention=True),
             OutputSpec("saliency", ("B", "H", "W"), "stimulus-based attention S in (0, 1)", attention=True)),
    hyperparams=(HyperParam("att_dim", "int", 256, "hidden size of the additive attention scorer", 1, 4096),
                 HyperParam("epsilon", "float", math.e, "epsilon in log(S + epsilon); must be > 1 so the "
                            "factor stays positive", 1.0001, 100.0)),
    build=lambda shapes, p: BoostedAttention(shapes["features"][1], shapes["hidden"][1], p["att_dim"], p["epsilon"]),
    example_shapes={"features": (2, 8, 5, 4), "hidden": (2, 6)},
    test_shapes=({"features": (1, 3, 1, 1), "hidden": (1, 2)}, {"features": (3, 16, 7, 5), "hidden": (3, 10)}),
    notes="UNCERTAIN DETAILS: the paper integrates a saliency map from a separately trained saliency model; "
          "here a 1x1-conv sigmoid head on the same features stands in for it. The boosting function "
          "log(S + epsilon) and the value of epsilon are our reading of the paper's integration and could "
          "not be re-checked against its equations; the top-down part is the standard additive attention "
          "of the captioning decoder the paper builds on.",
)
