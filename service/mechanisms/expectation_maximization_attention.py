"""Expectation-Maximization Attention Unit (EMAU).

Li, Zhong, Wu, Yang, Lin, Liu, "Expectation-Maximization Attention Networks for Semantic
Segmentation", ICCV 2019 (EMANet), Sec. 3.2-3.3.

Shapes: x [B, C, H, W] -> output [B, C, H, W]; N = H*W pixels, K bases.
- Input projection: X = conv1x1(x) (with bias), flattened to [B, N, C].
- Bases mu [C, K] (a buffer, initialised from N(0, 2/K) and L2-normalised over C; in the paper it is
  updated by a moving average during training, so at inference it is a fixed, loadable tensor).
- For t = 1..T (paper default T = 3):
    E-step:  Z = softmax_K(lambda * X mu)                   (responsibilities z_nk, [B, N, K])
    M-step:  mu_k = sum_n z_nk x_n / sum_n z_nk ; mu_k <- mu_k / ||mu_k||_2   ([B, C, K])
- Re-estimation: X~ = Z mu^T  ([B, N, C]), the low-rank reconstruction of X.
- Output: relu(x + BN(conv1x1_nobias(relu(X~))))  (the unit's residual output, as in the released
  EMANet code: ReLU, 1x1 conv without bias + BatchNorm, residual add, ReLU).
lambda (the kernel temperature of the E-step) is 1 in the released models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class EMAUnit(nn.Module):
    def __init__(self, channels: int, bases: int = 64, iterations: int = 3, temperature: float = 1.0):
        super().__init__()
        self.iterations = iterations
        self.temperature = temperature
        mu = torch.randn(1, channels, bases) * (2.0 / bases) ** 0.5
        self.register_buffer("mu", F.normalize(mu, dim=1))
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.conv_out = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = x.shape
        feats = self.conv_in(x).flatten(2)                                   # [B, C, N]
        mu = self.mu.expand(b, -1, -1)                                      # [B, C, K]
        z = None
        for _ in range(self.iterations):
            z = torch.softmax(self.temperature * feats.transpose(1, 2) @ mu, dim=2)   # E-step [B, N, K]
            z_norm = z / (1e-6 + z.sum(dim=1, keepdim=True))                           # M-step weights
            mu = F.normalize(feats @ z_norm, dim=1)                                     # [B, C, K]
        recon = (mu @ z.transpose(1, 2)).reshape(b, c, h, w)                # X~ = Z mu^T
        out = torch.relu(x + self.bn(self.conv_out(torch.relu(recon))))
        k = mu.shape[2]
        return {"output": out, "responsibilities": z.transpose(1, 2).reshape(b, k, h, w), "bases": mu}


MECHANISM = Mechanism(
    slug="expectation-maximization-attention",
    title="EMA unit: EM iterations over K bases (E-step softmax responsibilities, M-step weighted means), "
          "low-rank reconstruction, residual output",
    reference="Li et al., ICCV 2019 (EMANet), Sec. 3.2 E-step / M-step, Sec. 3.3 EMA unit",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "relu(x + BN(conv(relu(Z mu^T))))"),
             OutputSpec("responsibilities", ("B", "K", "H", "W"),
                        "last E-step responsibilities z_nk, a softmax over the K bases at each pixel",
                        attention=True),
             OutputSpec("bases", ("B", "C", "K"), "bases mu after the last M-step (unit L2 norm)",
                        attention=True)),
    hyperparams=(HyperParam("bases", "int", 64, "number of bases K", 1, 1024),
                 HyperParam("iterations", "int", 3, "EM iterations T", 1, 50),
                 HyperParam("temperature", "float", 1.0, "lambda in Z = softmax(lambda X mu)", 1e-3, 100.0)),
    build=lambda shapes, p: EMAUnit(shapes["x"][1], p["bases"], p["iterations"], p["temperature"]),
    example_shapes={"x": (2, 16, 6, 5)},
    test_shapes=({"x": (1, 8, 7, 3)}, {"x": (3, 32, 1, 1)}),
    notes="The bases mu are a buffer (published with the weights): at inference EMANet uses the "
          "moving-average bases learned in training. BatchNorm runs in eval mode (running statistics).",
)
