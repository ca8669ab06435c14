"""Self-critical attention: an attention agent scored by a critic network.

Chen, Lin, Ren, Lu, Zhou, "Self-Critical Attention Learning for Person Re-Identification", ICCV 2019, Sec. 3.

Shapes: features F [B, C, H, W] -> output F~ [B, C, H, W]; K identities (classes).
- Attention agent pi_theta (spatial x channel attention):
    spatial  A_s = sigmoid(conv1x1(ReLU(conv1x1(F))))          [B, H, W]   (C -> C/r -> 1)
    channel  A_c = sigmoid(W_2 ReLU(W_1 GAP(F)))                [B, C]      (C -> C/r -> C)
    A = A_s ⊗ A_c,  F~ = F ⊙ A
- Classifier: p(.|X) = softmax(W_cls GAP(X) + b)
- Critic Q_psi(F, A) = w_2^T ReLU(W_q [GAP(F); GAP(F~)] + b_q) + b_2   (estimated value of the attention)
- Self-critical reward: r = p(y | F~) - p(y | F), the gain in the probability of identity y from attending;
  training regresses Q onto r (critic) and maximises Q (agent). At inference y is the predicted identity
  argmax p(.|F~) (the ground-truth identity is used during training).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class SelfCriticalAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, classes: int = 10, critic_hidden: int = 64):
        super().__init__()
        hid = max(1, channels // reduction)
        self.sp1, self.sp2 = nn.Conv2d(channels, hid, 1), nn.Conv2d(hid, 1, 1)
        self.ch1, self.ch2 = nn.Linear(channels, hid), nn.Linear(hid, channels)
        self.classifier = nn.Linear(channels, classes)
        self.critic1, self.critic2 = nn.Linear(2 * channels, critic_hidden), nn.Linear(critic_hidden, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a_s = torch.sigmoid(self.sp2(torch.relu(self.sp1(x))))[:, 0]                    # [B, H, W]
        g = x.mean(dim=(2, 3))
        a_c = torch.sigmoid(self.ch2(torch.relu(self.ch1(g))))                           # [B, C]
        att = a_s.unsqueeze(1) * a_c[:, :, None, None]
        out = x * att
        g_att = out.mean(dim=(2, 3))
        q = self.critic2(torch.relu(self.critic1(torch.cat([g, g_att], 1))))[:, 0]
        p_att = torch.softmax(self.classifier(g_att), 1)
        p_raw = torch.softmax(self.classifier(g), 1)
        y = p_att.argmax(1, keepdim=True)
        reward = (p_att.gather(1, y) - p_raw.gather(1, y))[:, 0]
        return {"output": out, "spatial_attention": a_s, "channel_attention": a_c, "critic_value": q,
                "reward": reward}


MECHANISM = Mechanism(
    slug="self-critical-attention",
    title="Self-critical attention: spatial x channel attention agent, critic value and attention-gain reward",
    reference="Chen et al., ICCV 2019 (Self-Critical Attention Learning for Person Re-ID), Sec. 3",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "backbone feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "attended features F ⊙ A"),
             OutputSpec("spatial_attention", ("B", "H", "W"), "spatial attention A_s in (0, 1)", attention=True),
             OutputSpec("channel_attention", ("B", "C"), "channel attention A_c in (0, 1)", attention=True),
             OutputSpec("critic_value", ("B",), "critic's estimate Q(F, A) of the attention's value", attention=True),
             OutputSpec("reward", ("B",), "p(y|F~) - p(y|F) for the predicted identity y", attention=True)),
    hyperparams=(HyperParam("reduction", "int", 16, "bottleneck ratio r of the agent", 1, 1024),
                 HyperParam("classes", "int", 10, "identities K of the classifier", 1, 100000),
                 HyperParam("critic_hidden", "int", 64, "hidden width of the critic", 1, 4096)),
    build=lambda shapes, p: SelfCriticalAttention(shapes["x"][1], p["reduction"], p["classes"], p["critic_hidden"]),
    example_shapes={"x": (2, 16, 6, 4)},
    test_shapes=({"x": (1, 3, 1, 5)}, {"x": (3, 32, 7, 7)}),
    notes="UNCERTAIN DETAILS: the paper's agent combines spatial and channel attention branches and its critic "
          "scores (features, attention) pairs; the layer sizes, the combination A_s ⊗ A_c and the critic's "
          "input (pooled features with and without attention) are our choices. Not stochastic: the paper's "
          "attention is continuous and trained actor-critic style; the critic is kept to expose its value.",
)
