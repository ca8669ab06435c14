"""Attention-based Dropout Layer (ADL).

Choe, Shim, "Attention-based Dropout Layer for Weakly Supervised Object Localization", CVPR 2019.

Shapes: x [B, C, H, W] -> output [B, C, H, W]; self_attention, drop_mask, importance_map [B, H, W];
used_drop_mask, log_prob [1].
- Self-attention map (Sec. 3.1): A = 1/C sum_c x_c (channel-wise average pooling).
- Drop mask: M_drop(i, j) = 0 where A(i, j) > gamma * max A (per sample), else 1; gamma is the drop
  threshold.
- Importance map: M_imp = sigmoid(A).
- Stochastic selection: at every training iteration one of the two maps is chosen, the drop mask
  with probability rho (the drop rate), otherwise the importance map; output = x * M (broadcast over
  channels). One choice per forward pass for the whole batch, as in the authors' code.
- At test time ADL is deactivated: output = x (hyper-parameter training=false).
ADL has no parameters. The random choice is drawn from the supplied generator; used_drop_mask says
which map was applied and log_prob is log rho or log(1 - rho) accordingly; with training=false nothing
is sampled and both are reported as 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class AttentionDropout(nn.Module):
    def __init__(self, drop_rate: float = 0.75, threshold: float = 0.9, training_mode: bool = True):
        super().__init__()
        self.drop_rate, self.threshold, self.training_mode = drop_rate, threshold, training_mode

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        a = x.mean(dim=1)                                                           # A: [B, H, W]
        peak = a.flatten(1).max(dim=1).values[:, None, None]
        drop = (a <= self.threshold * peak).to(x.dtype)                             # M_drop
        imp = torch.sigmoid(a)                                                      # M_imp
        use_drop = torch.zeros(1, dtype=x.dtype, device=x.device)
        log_prob = torch.zeros(1, dtype=x.dtype, device=x.device)
        out = x
        if self.training_mode:
            u = torch.rand(1, generator=generator, device=x.device)
            chosen = bool(u[0] < self.drop_rate)
            use_drop.fill_(float(chosen))
            p = self.drop_rate if chosen else 1.0 - self.drop_rate
            log_prob.fill_(math.log(p) if p > 0 else float("-inf"))
            out = x * (drop if chosen else imp)[:, None]
        return {"output": out, "self_attention": a, "drop_mask": drop, "importance_map": imp,
                "used_drop_mask": use_drop, "log_prob": log_prob}


MECHANISM = Mechanism(
    slug="attention-dropout",
    title="Attention-based Dropout Layer (ADL): channel-mean self-attention, thresholded drop mask or "
          "sigmoid importance map chosen at random",
    reference="Choe & Shim, CVPR 2019, Sec. 3 (Fig. 2)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "x * selected map (training) or x (evaluation)"),
             OutputSpec("self_attention", ("B", "H", "W"), "A, channel-wise mean of x", attention=True),
             OutputSpec("drop_mask", ("B", "H", "W"), "0 where A > gamma * max A, else 1", attention=True),
             OutputSpec("importance_map", ("B", "H", "W"), "sigmoid(A)", attention=True),
             OutputSpec("used_drop_mask", ("1",), "1 if the drop mask was applied, 0 otherwise", attention=True),
             OutputSpec("log_prob", ("1",), "log-probability of the sampled choice", attention=True)),
    hyperparams=(
        HyperParam("drop_rate", "float", 0.75, "probability rho of applying the drop mask", 0.0, 1.0),
        HyperParam("threshold", "float", 0.9, "drop threshold gamma (fraction of max A)", 0.0, 1.0),
        HyperParam("training", "bool", True, "training-time behaviour; false makes ADL the identity"),
    ),
    build=lambda shapes, p: AttentionDropout(p["drop_rate"], p["threshold"], p["training"]),
    example_shapes={"x": (2, 8, 6, 5)},
    test_shapes=({"x": (1, 3, 7, 1)}, {"x": (4, 16, 3, 3)}),
    stochastic=True,
    notes="Parameter-free. One random choice per forward (per batch) from the generator; identity when "
          "training is false. Paper defaults drop_rate 0.75, gamma 0.9 (ResNet50/VGG settings vary).",
)
