"""Uncertainty-aware attention (UA): attention pre-activations drawn from input-dependent Gaussians.

Heo, Lee, Kim, Lee, Kim, Yang, Hwang, "Uncertainty-Aware Attention for Reliable Interpretation and
Prediction", NeurIPS 2018, Sec. 3 (stochastic attention with input-adaptive noise), built on the
RETAIN two-level attention it is applied to (Choi et al., NeurIPS 2016).

Shapes: x [B, N, F] (N time steps / features) -> output context c [B, D].
- Embedding: v_j = W_emb x_j                                                 [B, N, D]
- Input-dependent Gaussians (UA): visit-level  a_j ~ N(mu_a(v_j), sigma_a(v_j)^2)       (scalar)
                                  variable-level b_j ~ N(mu_b(v_j), diag(sigma_b(v_j)^2)) (vector D)
  mu(.) and log sigma(.) are affine maps of v_j; reparameterised draws a = mu + sigma * eps, eps ~ N(0, 1)
  from the generator.
- Squashing as in RETAIN: alpha = softmax_j(a_j) (over the N steps), beta_j = tanh(b_j).
- Context: c = sum_j alpha_j * (beta_j ⊙ v_j).
- log_prob_j = log N(a_j; mu_a, sigma_a^2) + sum_d log N(b_jd; mu_b, sigma_b^2): density of the draws.
With ``training=False`` the means are used instead of draws (deterministic prediction).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


def _normal_log_prob(x, mu, log_sigma):
    return -0.5 * ((x - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)


class UncertaintyAwareAttention(nn.Module):
    def __init__(self, in_dim: int, dim: int = 32, training: bool = True):
        super().__init__()
        self.sample = training
        self.embed = nn.Linear(in_dim, dim, bias=False)
        self.mu_a, self.log_sigma_a = nn.Linear(dim, 1), nn.Linear(dim, 1)
        self.mu_b, self.log_sigma_b = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        v = self.embed(x)
        mu_a, ls_a = self.mu_a(v).squeeze(-1), self.log_sigma_a(v).squeeze(-1)        # [B, N]
        mu_b, ls_b = self.mu_b(v), self.log_sigma_b(v)                                  # [B, N, D]
        if self.sample:
            if generator is None:
                raise ValueError("uncertainty-aware-attention draws its noise from a torch.Generator")
            eps_a = torch.randn(mu_a.shape, generator=generator, dtype=torch.float64, device=x.device).to(x.dtype)
            eps_b = torch.randn(mu_b.shape, generator=generator, dtype=torch.float64, device=x.device).to(x.dtype)
            a, b = mu_a + ls_a.exp() * eps_a, mu_b + ls_b.exp() * eps_b
        else:
            a, b = mu_a, mu_b
        alpha = torch.softmax(a, dim=1)
        beta = torch.tanh(b)
        c = (alpha.unsqueeze(-1) * beta * v).sum(1)
        log_prob = _normal_log_prob(a, mu_a, ls_a) + _normal_log_prob(b, mu_b, ls_b).sum(-1)
        return {"output": c, "alpha": alpha, "beta": beta, "sigma_alpha": ls_a.exp(), "sigma_beta": ls_b.exp(),
                "log_prob": log_prob}


MECHANISM = Mechanism(
    slug="uncertainty-aware-attention",
    title="UA: RETAIN-style visit/variable attention with input-dependent Gaussian noise on the pre-activations",
    reference="Heo et al., NeurIPS 2018 (Uncertainty-Aware Attention), Sec. 3; RETAIN squashing (Choi et al. 2016)",
    inputs=(InputSpec("x", ("B", "N", "F"), "sequence of N inputs (e.g. visits) with F features"),),
    outputs=(OutputSpec("output", ("B", "D"), "context c = sum_j alpha_j beta_j ⊙ v_j"),
             OutputSpec("alpha", ("B", "N"), "step attention (softmax over N of the sampled a_j)", attention=True),
             OutputSpec("beta", ("B", "N", "D"), "feature attention tanh(b_j) in (-1, 1)", attention=True),
             OutputSpec("sigma_alpha", ("B", "N"), "input-dependent std of a_j (the attention uncertainty)",
                        attention=True),
             OutputSpec("sigma_beta", ("B", "N", "D"), "input-dependent std of b_j", attention=True),
             OutputSpec("log_prob", ("B", "N"), "Gaussian log-density of the drawn a_j and b_j", attention=True)),
    hyperparams=(HyperParam("dim", "int", 32, "embedding size D", 1, 4096),
                 HyperParam("training", "bool", True, "draw the attention (training / MC prediction); false = "
                            "use the means")),
    build=lambda shapes, p: UncertaintyAwareAttention(shapes["x"][2], p["dim"], p["training"]),
    example_shapes={"x": (2, 5, 6)},
    test_shapes=({"x": (1, 1, 3)}, {"x": (3, 9, 10)}),
    stochastic=True,
    notes="RETAIN produces the Gaussian parameters with two reverse-time RNNs over v; here mu and log sigma "
          "are affine maps of each v_j (the paper's general form a ~ N(mu(v), sigma(v)^2)), so the block "
          "stays a single attention layer. The final output layer and the KL to the prior used in training "
          "are not included.",
)
