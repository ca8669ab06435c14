"""Attention pyramid (AP-CNN): spatial and channel attention at every level of a feature pyramid, with
the channel attention propagated bottom-up.

Ding, Zhou, Zhu, Ye, Jiao, "AP-CNN: Weakly Supervised Attention Pyramid Convolutional Neural Network for
Fine-Grained Visual Classification", IEEE TIP 30, 2021 (Sec. III-B, attention pyramid).

Shapes: f3 [B, C, H3, W3], f4 [B, C, H4, W4], f5 [B, C, H5, W5] (the top-down feature pathway's levels,
finest first) -> output [B, C, H3, W3] (attended level 3), output_4, output_5 (attended levels 4 and 5),
spatial_3/4/5 [B, 1, Hi, Wi] (spatial attention pyramid), channel_3/4/5 [B, C] (channel attention pyramid).
- Spatial attention per level: A^s_i = sigmoid(Conv_3x3(F_i)) (one output channel).
- Channel attention per level: a_i = sigmoid(W2 ReLU(W1 GAP(F_i))), W1: C/r x C, W2: C x C/r.
- Bottom-up attention pathway on the channel pyramid: A^c_3 = a_3, A^c_i = (a_i + A^c_{i-1}) / 2.
- Attended features: F'_i = A^s_i * F_i + A^c_i * F_i.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class LevelGates(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.spatial = nn.Conv2d(channels, 1, 3, padding=1)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, f: torch.Tensor):
        spatial = torch.sigmoid(self.spatial(f))                                          # A^s_i
        channel = torch.sigmoid(self.fc2(torch.relu(self.fc1(f.mean(dim=(2, 3))))))       # a_i
        return spatial, channel


class AttentionPyramid(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.level3 = LevelGates(channels, reduction)
        self.level4 = LevelGates(channels, reduction)
        self.level5 = LevelGates(channels, reduction)

    def forward(self, f3: torch.Tensor, f4: torch.Tensor, f5: torch.Tensor) -> dict[str, torch.Tensor]:
        out, prev = {}, None
        for i, f, gates in ((3, f3, self.level3), (4, f4, self.level4), (5, f5, self.level5)):
            spatial, channel = gates(f)
            if prev is not None:
                channel = (channel + prev) / 2                                           # bottom-up pathway
            prev = channel
            out["output" if i == 3 else f"output_{i}"] = spatial * f + channel[:, :, None, None] * f
            out[f"spatial_{i}"] = spatial
            out[f"channel_{i}"] = channel
        return out

MECHANISM = Mechanism(
    slug="attention-pyramid",
    title="AP-CNN attention pyramid: per-level spatial (3x3 conv) and channel (SE-style) attention over a "
          "three-level feature pyramid, channel attention averaged bottom-up",
    reference="Ding et al., IEEE TIP 2021, Sec. III-B (spatial attention pyramid, channel attention pyramid, "
              "bottom-up attention pathway)",
    inputs=(InputSpec("f3", ("B", "C", "H3", "W3"), "finest pyramid level F_3 (top-down pathway output)"),
            InputSpec("f4", ("B", "C", "H4", "W4"), "middle pyramid level F_4"),
            InputSpec("f5", ("B", "C", "H5", "W5"), "coarsest pyramid level F_5")),
    outputs=(OutputSpec("output", ("B", "C", "H3", "W3"), "attended level 3, F'_3"),
             OutputSpec("output_4", ("B", "C", "H4", "W4"), "attended level 4, F'_4"),
             OutputSpec("output_5", ("B", "C", "H5", "W5"), "attended level 5, F'_5"),
             OutputSpec("spatial_3", ("B", "1", "H3", "W3"), "spatial attention A^s_3", attention=True),
             OutputSpec("channel_3", ("B", "C"), "channel attention A^c_3", attention=True),
             OutputSpec("spatial_4", ("B", "1", "H4", "W4"), "spatial attention A^s_4", attention=True),
             OutputSpec("channel_4", ("B", "C"), "channel attention A^c_4 (after the bottom-up average)",
                        attention=True),
             OutputSpec("spatial_5", ("B", "1", "H5", "W5"), "spatial attention A^s_5", attention=True),
             OutputSpec("channel_5", ("B", "C"), "channel attention A^c_5 (after the bottom-up average)",
                        attention=True)),
    hyperparams=(HyperParam("reduction", "int", 16, "channel-attention bottleneck ratio r (16 in the authors' "
                            "code)", 1, 1024),),
    build=lambda shapes, p: AttentionPyramid(shapes["f3"][1], p["reduction"]),
    example_shapes={"f3": (2, 32, 16, 16), "f4": (2, 32, 8, 8), "f5": (2, 32, 4, 4)},
    test_shapes=({"f3": (1, 16, 7, 9), "f4": (1, 16, 4, 5), "f5": (1, 16, 2, 3)},
                 {"f3": (3, 64, 28, 28), "f4": (3, 64, 14, 14), "f5": (3, 64, 7, 7)}),
    notes="Identification of the survey's 'attention pyramid' with AP-CNN is uncertain (see the technique "
          "record). The combination F' = A^s F + A^c F (a sum of the two gated maps) and the bottom-up average "
          "of channel attention follow the authors' released code; the technique record's condensed formula "
          "writes a product F * A^c * A^s instead. The spatial gate is a plain 3 x 3 convolution (the released "
          "code uses the equivalent transposed 3 x 3 convolution, stride 1). The FPN top-down pathway, ROI "
          "proposal, ROI-guided dropblock and zoom-in are outside the module.",
)
