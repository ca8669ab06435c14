"""GATCluster clustering head: global cluster branch + Gaussian-attention cluster branch.

Niu, Zhang, Wang, Liang, "GATCluster: Self-Supervised Gaussian-Attention Network for Image Clustering",
ECCV 2020, Sec. 3. The layers (feature conv + BN, two-layer MLP classifiers, attention conv with K
channels) follow the released configs of GaussianAttentionClusterHead; the Gaussian map follows the
paper (centre (theta_0, theta_1), spread theta_2, row-major grid), not the released
generate_gaussian_att_map (see self-supervised-gaussian-attention for the differences).

Shapes: features F [B, C, H, W] (backbone output) -> output p [B, K] (cluster assignments).
- Feature conv: F_c = BN(conv1x1(F))
- Global branch: p = softmax(MLP_o(GAP(F_c))), MLP = Linear(C, K) -> ReLU -> Linear(K, K)  ("label features")
- Gaussian attention on F (see self-supervised-gaussian-attention): a(u), theta = (mu_1, mu_2, s)
- Attention branch: f_a = sum_u a(u) F_c(u);  p_a = softmax(MLP_a(f_a))
- Cluster label: argmax_k p_k. Soft-attention target for p_a (self-generated from p over the batch):
  t_ik = (p_ik^2 / sum_i p_ik) / sum_k (p_ik^2 / sum_i p_ik)
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .self_supervised_gaussian_attention import GaussianAttention, attention_target


def _mlp(c: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c, k), nn.ReLU(), nn.Linear(k, k))


class GATClusterHead(nn.Module):
    def __init__(self, channels: int, height: int, width: int, clusters: int = 10, lam: float = 0.05):
        super().__init__()
        self.feature_conv = nn.Conv2d(channels, channels, 1)
        self.feature_bn = nn.BatchNorm2d(channels)
        self.classifier = _mlp(channels, clusters)
        self.attention = GaussianAttention(channels, height, width, clusters, lam)
        self.classifier_att = _mlp(channels, clusters)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        fc = self.feature_bn(self.feature_conv(features))
        p = torch.softmax(self.classifier(fc.mean(dim=(2, 3))), dim=1)
        amap, theta = self.attention.gaussian(features)
        fa = torch.einsum("bhw,bchw->bc", amap, fc)
        pa = torch.softmax(self.classifier_att(fa), dim=1)
        return {"output": p, "attention_probabilities": pa, "labels": p.argmax(1), "attention_map": amap,
                "gaussian_params": theta, "attention_target": attention_target(p)}


def _check(shapes, p):
    b, c, h, w = shapes["features"]
    return [] if h * w <= 4096 else [f"H*W={h * w} is above 4096 (the parameter head is dense over H*W)"]


MECHANISM = Mechanism(
    slug="gatcluster",
    title="GATCluster head: global cluster assignments plus a Gaussian-attention cluster branch",
    reference="Niu et al., ECCV 2020 (GATCluster), Sec. 3; layer sizes as in the released configs",
    inputs=(InputSpec("features", ("B", "C", "H", "W"), "backbone feature map"),),
    outputs=(OutputSpec("output", ("B", "K"), "soft cluster assignment p (softmax over K clusters)"),
             OutputSpec("attention_probabilities", ("B", "K"), "assignment p_a from the attended feature",
                        attention=True),
             OutputSpec("labels", ("B",), "cluster label argmax_k p_k", attention=True),
             OutputSpec("attention_map", ("B", "H", "W"), "Gaussian attention map a(u)", attention=True),
             OutputSpec("gaussian_params", ("B", "3"), "(mu_row, mu_col, s) in (0, 1)", attention=True),
             OutputSpec("attention_target", ("B", "K"), "self-generated soft-attention target from p (over the batch)",
                        attention=True)),
    hyperparams=(HyperParam("clusters", "int", 10, "number of clusters K", 2, 1000),
                 HyperParam("lam", "float", 0.05, "lambda, scale of the Gaussian's spread", 1e-4, 10.0)),
    build=lambda shapes, p: GATClusterHead(shapes["features"][1], shapes["features"][2], shapes["features"][3],
                                           p["clusters"], p["lam"]),
    example_shapes={"features": (4, 8, 6, 6)},
    test_shapes=({"features": (1, 4, 1, 5)}, {"features": (3, 16, 7, 3)}),
    constraints=("H*W <= 4096 (the Gaussian-parameter layer is fully connected over positions)",),
    check=_check,
    notes="The backbone and the four self-learning losses (transformation invariance, separability, entropy, "
          "soft attention) are training-time parts; this entry is the inference head. The attention conv "
          "has K channels as in the released configs. Eval-mode BatchNorm uses running statistics.",
)
