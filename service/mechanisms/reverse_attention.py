"""Reverse attention: the combination step of the Reverse Attention Network (RAN).

Huang, Wu, Sun, Kuo (and colleagues), "Semantic Segmentation with Reverse Attention", BMVC 2017.

Shapes: x [B, C, H, W] (backbone features, DeepLab-LargeFOV fc7 in the paper) -> output P_RAN
[B, K, H, W] (K classes); reverse_attention A [B, K, H, W]; original_scores P_org and
reverse_scores R [B, K, H, W].
- Original branch: P_org = conv_org(x), the usual per-class score map (1x1 classifier).
- Reverse branch: R = conv_rev(x), trained on reversed targets so that R_c responds where a pixel is
  NOT of class c.
- Reverse-attention branch: A = sigmoid(NEG(P_org)) = sigmoid(-P_org), large where the original
  prediction for c is weak or negative (the confusing regions).
- Combination: P_RAN = P_org - A * R (element-wise): the reverse evidence, negated and gated by A, is
  added to the original scores.
The classifiers are 1x1 convolutions with bias; the backbone and the training losses (one per branch)
are outside this block. (A later, different "reverse attention" is Chen et al., ECCV 2018, which
erases the side-output prediction with 1 - sigmoid(S) for salient object detection.)
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class ReverseAttention(nn.Module):
    def __init__(self, channels: int, num_classes: int = 21):
        super().__init__()
        self.conv_org = nn.Conv2d(channels, num_classes, 1)
        self.conv_rev = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p_org = self.conv_org(x)
        r = self.conv_rev(x)
        a = torch.sigmoid(-p_org)
        return {"output": p_org - a * r, "reverse_attention": a, "original_scores": p_org,
                "reverse_scores": r}


MECHANISM = Mechanism(
    slug="reverse-attention",
    title="Reverse attention combination of RAN: sigmoid of negated original scores gates the "
          "reverse-branch response, which is subtracted",
    reference="Huang et al., BMVC 2017 (RAN, Sec. 3: original, reverse and reverse-attention branches)",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "backbone feature map"),),
    outputs=(OutputSpec("output", ("B", "K", "H", "W"), "combined class scores P_RAN"),
             OutputSpec("reverse_attention", ("B", "K", "H", "W"), "A = sigmoid(-P_org)", attention=True),
             OutputSpec("original_scores", ("B", "K", "H", "W"), "P_org", attention=True),
             OutputSpec("reverse_scores", ("B", "K", "H", "W"), "R, reverse-branch response", attention=True)),
    hyperparams=(HyperParam("num_classes", "int", 21, "number of classes K (PASCAL VOC: 21)", 1, 4096),),
    build=lambda shapes, p: ReverseAttention(shapes["x"][1], p["num_classes"]),
    example_shapes={"x": (2, 16, 6, 5)},
    test_shapes=({"x": (1, 3, 7, 1)}, {"x": (3, 32, 4, 4)}),
    notes="Identification follows the project's data (Huang et al. 2017); the sign convention folds the "
          "paper's NEG blocks into P_org - sigmoid(-P_org) * R.",
)
