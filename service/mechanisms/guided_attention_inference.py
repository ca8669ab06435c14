"""Guided Attention Inference Network (GAIN): the attention map and the attention-mining stream.

Li, Wu, Peng, Ernst, Fu, "Tell Me Where to Look: Guided Attention Inference Network", CVPR 2018, Sec. 3.1.

Shapes: image I [B, C, H, W] -> output I* [B, C, H, W]; K classes, F feature channels.
Classification stream (a minimal backbone so that the block is self-contained):
  f_l = ReLU(conv3x3(I)) [B, F, H, W];  s = W_fc GAP(f_l) + b [B, K];  c = argmax_k s_k (top-1 class)
- Eq. 1: w^c_k = GAP(ds^c / df_{l,k})  -> [B, F]
- Eq. 2: A^c = ReLU(sum_k w^c_k f_{l,k})  (Grad-CAM, [B, H, W]; same resolution as I here)
- Eq. 3: T(A^c) = 1 / (1 + exp(-omega (A^c - sigma)))   soft mask, sigma = 0.5, omega = 10
- Eq. 4: I*c = I - T(A^c) * I                          (attention-mining input: the attended region erased)
- Eq. 5 term: s^c(I*c), the class score of the erased image (the attention-mining loss averages it).
Because the head is GAP + linear, ds^c/df_{l,k}(i, j) = W_fc[c, k] / (HW) exactly, so Eq. 1 is evaluated
in closed form (w^c_k = W_fc[c, k] / (HW)); the test checks this against autograd.
With ``normalize`` (default), A^c is divided by its per-image maximum before Eq. 3 so that the threshold
sigma acts on a [0, 1] map (as common GAIN implementations do; the paper does not spell the scale out).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class GAIN(nn.Module):
    def __init__(self, in_channels: int, features: int = 64, classes: int = 10, sigma: float = 0.5,
                 omega: float = 10.0, normalize: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, features, 3, padding=1)
        self.fc = nn.Linear(features, classes)
        self.sigma, self.omega, self.normalize = sigma, omega, normalize

    def scores(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.conv(image))
        return f, self.fc(f.mean(dim=(2, 3)))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        f, s = self.scores(image)
        c = s.argmax(dim=1)
        h, w = f.shape[2:]
        weights = self.fc.weight[c] / (h * w)                                  # Eq. 1 (closed form) [B, F]
        att = torch.relu(torch.einsum("bk,bkhw->bhw", weights, f))             # Eq. 2
        a = att
        if self.normalize:
            a = att / att.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        mask = torch.sigmoid(self.omega * (a - self.sigma))                    # Eq. 3
        erased = image - mask.unsqueeze(1) * image                             # Eq. 4
        _, s_erased = self.scores(erased)
        return {"output": erased, "attention": att, "mask": mask, "logits": s, "class_index": c,
                "erased_score": s_erased.gather(1, c[:, None])[:, 0]}


MECHANISM = Mechanism(
    slug="guided-attention-inference",
    title="GAIN: Grad-CAM attention of the top class, soft mask, and the attention-mining erased image",
    reference="Li et al., CVPR 2018 (GAIN), Eqs. 1-5",
    inputs=(InputSpec("image", ("B", "C", "H", "W"), "input image (or feature map)"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "I* = I - T(A) * I, the image with the attended region erased"),
             OutputSpec("attention", ("B", "H", "W"), "Grad-CAM attention map A^c (Eq. 2)", attention=True),
             OutputSpec("mask", ("B", "H", "W"), "soft mask T(A^c) in (0, 1) (Eq. 3)", attention=True),
             OutputSpec("logits", ("B", "K"), "class scores s of the classification stream", attention=True),
             OutputSpec("class_index", ("B",), "class c whose attention is computed (top-1)", attention=True),
             OutputSpec("erased_score", ("B",), "s^c(I*), the attention-mining term of Eq. 5", attention=True)),
    hyperparams=(HyperParam("features", "int", 64, "channels F of the feature map f_l", 1, 4096),
                 HyperParam("classes", "int", 10, "number of classes K", 1, 10000),
                 HyperParam("sigma", "float", 0.5, "mask threshold sigma (Eq. 3)", 0.0, 1.0),
                 HyperParam("omega", "float", 10.0, "mask sharpness omega (Eq. 3)", 0.0, 1000.0),
                 HyperParam("normalize", "bool", True, "divide A^c by its maximum before thresholding")),
    build=lambda shapes, p: GAIN(shapes["image"][1], p["features"], p["classes"], p["sigma"], p["omega"],
                                 p["normalize"]),
    example_shapes={"image": (2, 3, 8, 8)},
    test_shapes=({"image": (1, 1, 5, 7)}, {"image": (3, 4, 3, 3)}),
    notes="The backbone is one 3x3 conv + ReLU and the classifier GAP + linear, so the block runs standalone; "
          "GAIN's attention is defined for any CNN, and with a GAP-linear head its gradient weights reduce to "
          "the CAM weights W_fc[c]/(HW). The class is the predicted top-1 (GAIN uses the ground-truth labels "
          "during training). The self-guidance loss on I* and the optional external supervision (Eq. 7) "
          "are training objectives and not part of the forward pass.",
)
