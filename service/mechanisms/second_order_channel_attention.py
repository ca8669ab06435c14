"""Second-order channel attention (SOCA) of the Second-order Attention Network (SAN).

Dai, Cai, Zhang, Xia, Zhang, "Second-order Attention Network for Single Image Super-Resolution",
CVPR 2019, Sec. 3.3 (SOCA) and 3.4 (covariance normalization acceleration).

Shapes: x [B, C, H, W] -> output [B, C, H, W], weights [B, C], covariance_sqrt [B, C, C].
- X = x reshaped to C x s, s = HW.  Covariance (Eq. 9): Sigma = X I_bar X^T, I_bar = (1/s)(I - (1/s) 1),
  1 the all-ones matrix.                                                                 -> [B, C, C]
- Covariance normalization Y_hat = Sigma^{1/2} by Newton-Schulz iteration (Sec. 3.4, Eqs. 12-14):
  pre-normalization A = Sigma / tr(Sigma); Y_0 = A, Z_0 = I;
  Y_n = 1/2 Y_{n-1} (3I - Z_{n-1} Y_{n-1}),  Z_n = 1/2 (3I - Z_{n-1} Y_{n-1}) Z_{n-1}   (N iterations);
  post-compensation Y_hat = sqrt(tr(Sigma)) Y_N.
- Global covariance pooling (Eq. 10): z_c = 1/C sum_i Y_hat(c, i)                        -> z [B, C]
- Gating (Eq. 11): f = sigmoid(W_U relu(W_D z)), W_D: C/r x C, W_U: C x C/r (1x1 convolutions with
  bias in the released code);  output_c = f_c * x_c.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


def covariance(x: torch.Tensor) -> torch.Tensor:
    """Eq. 9 for x [B, C, H, W]: X I_bar X^T with I_bar = (I - 1/s) / s."""
    b, c, h, w = x.shape
    feats = x.reshape(b, c, h * w)
    centred = feats - feats.mean(dim=2, keepdim=True)          # X (I - 1/s 1), I_bar idempotent up to 1/s
    return centred @ centred.transpose(1, 2) / (h * w)


def newton_schulz_sqrt(sigma: torch.Tensor, iterations: int) -> torch.Tensor:
    """Sec. 3.4: approximate Sigma^{1/2} with trace pre-normalization and post-compensation."""
    c = sigma.shape[-1]
    eye = torch.eye(c, dtype=sigma.dtype, device=sigma.device).expand_as(sigma)
    trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
    trace = trace.clamp_min(torch.finfo(sigma.dtype).tiny)      # all-constant input: Sigma = 0
    y, z = sigma / trace, eye
    for _ in range(iterations):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, t @ z
    return y * trace.sqrt()


class SecondOrderChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, iterations: int = 5):
        super().__init__()
        self.iterations = iterations
        hidden = max(1, channels // reduction)
        self.conv_down = nn.Conv2d(channels, hidden, 1)   # W_D
        self.conv_up = nn.Conv2d(hidden, channels, 1)     # W_U

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y_hat = newton_schulz_sqrt(covariance(x), self.iterations)              # Eqs. 9, 12-14
        z = y_hat.mean(dim=2)                                                    # Eq. 10
        f = torch.sigmoid(self.conv_up(torch.relu(self.conv_down(z[:, :, None, None]))))  # Eq. 11
        return {"output": x * f, "weights": f[:, :, 0, 0], "covariance_sqrt": y_hat}


def _check(shapes, params):
    _, c, h, w = shapes["x"]
    problems = []
    if c // params["reduction"] < 1:
        problems.append(f"C={c} is smaller than reduction={params['reduction']}")
    if h * w < 2:
        problems.append("H*W must be at least 2: the covariance of a single position is zero")
    return problems


MECHANISM = Mechanism(
    slug="second-order-channel-attention",
    title="SOCA: covariance pooling normalised by Newton-Schulz matrix square root, SE-style channel gate",
    reference="Dai et al., CVPR 2019 (SAN), Sec. 3.3-3.4, Eqs. 9-14",
    inputs=(InputSpec("x", ("B", "C", "H", "W"), "feature map"),),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "rescaled feature map"),
             OutputSpec("weights", ("B", "C"), "channel gate f in (0, 1)", attention=True),
             OutputSpec("covariance_sqrt", ("B", "C", "C"), "normalised covariance Y_hat ~ Sigma^(1/2)",
                        attention=True)),
    hyperparams=(
        HyperParam("reduction", "int", 16, "reduction ratio r of W_D / W_U", 1, 1024),
        HyperParam("iterations", "int", 5, "Newton-Schulz iterations N", 1, 30),
    ),
    build=lambda shapes, p: SecondOrderChannelAttention(shapes["x"][1], p["reduction"], p["iterations"]),
    example_shapes={"x": (2, 32, 7, 7)},
    test_shapes=({"x": (1, 16, 5, 3)}, {"x": (3, 64, 1, 2)}),
    constraints=("C // reduction >= 1", "H*W >= 2"),
    check=_check,
    notes="The released code crops feature maps larger than 1000x1000 before pooling; not done here. "
          "The trace is clamped to the smallest positive float so an all-constant input gives a zero "
          "descriptor instead of NaN.",
)
