"""Bayesian Attention Modules (BAM): Weibull-distributed attention with a contextual Gamma prior.

Fan, Zhang, Chen, Zhou, "Bayesian Attention Modules", NeurIPS 2020 (Sec. 3, the Weibull variant with
the key-dependent "contextual" prior), applied to multi-head self-attention on tokens.

Shapes: x [B, N, D] -> output [B, N, D]; h heads of size d = D/h.
- Phi = Q K^T / sqrt(d) with Q, K, V = x W_Q, x W_K, x W_V   ([B, h, N, N])
- Variational distribution of the unnormalised weights: S_ij ~ Weibull(k, lambda_ij) with
  lambda_ij = softmax_j(Phi)_ij / Gamma(1 + 1/k), so E[S_ij] = softmax_j(Phi)_ij.
- Reparameterised draw: S = lambda (-log(1 - u))^{1/k}, u ~ U(0, 1)  (all u from the generator)
- Attention weights W = S / sum_j S  (normalising onto the simplex); output = concat_h(W V) W_O.
- Contextual prior: S_ij ~ Gamma(alpha_ij, beta) with alpha_ij = beta * softmax_j(g(k_j)),
  g = Linear -> LeakyReLU(0.1) -> Linear(1) applied to each key.
- KL(Weibull(k, lambda) || Gamma(alpha, beta)) = gamma_e alpha / k - alpha log lambda + log k
  + beta lambda Gamma(1 + 1/k) - gamma_e - 1 - alpha log beta + log Gamma(alpha)  (element-wise).
With ``training=False`` the weights are the mean-field deterministic softmax(Phi) (the paper's test-time
rule) and no noise is drawn. log_prob is log Weibull(S | k, lambda) of the drawn S.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .heads import merge_heads, split_heads
from .sampling import uniform

EULER_GAMMA = 0.5772156649015329


def weibull_gamma_kl(k: float, log_lam: torch.Tensor, alpha: torch.Tensor, beta: float) -> torch.Tensor:
    return (EULER_GAMMA * alpha / k - alpha * log_lam + math.log(k)
            + beta * torch.exp(log_lam + math.lgamma(1 + 1 / k)) - EULER_GAMMA - 1
            - alpha * math.log(beta) + torch.lgamma(alpha))


class BayesianAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 4, k: float = 10.0, beta: float = 1.0, prior_hidden: int = 10,
                 training: bool = True):
        super().__init__()
        self.heads, self.k, self.beta, self.sample = heads, k, beta, training
        self.q, self.kp, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        head_dim = dim // heads
        self.prior1 = nn.Linear(head_dim, prior_hidden)
        self.prior2 = nn.Linear(prior_hidden, 1)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                need_weights: bool = True) -> dict[str, torch.Tensor]:
        q, key, v = (split_heads(f(x), self.heads) for f in (self.q, self.kp, self.v))
        phi = q @ key.transpose(-2, -1) / q.shape[-1] ** 0.5                      # [B, h, N, N]
        log_mean = torch.log_softmax(phi, dim=-1)                                 # log E[S]
        log_lam = log_mean - math.lgamma(1 + 1 / self.k)                          # Weibull scale
        prior = torch.softmax(self.prior2(F.leaky_relu(self.prior1(key), 0.1)).squeeze(-1), dim=-1)  # [B, h, N]
        alpha = (self.beta * prior).unsqueeze(2).expand_as(phi)
        kl = weibull_gamma_kl(self.k, log_lam, alpha, self.beta)
        if not self.sample:
            w = log_mean.exp()
            out = self.o(merge_heads(w @ v))
            result = {"output": out, "attention": w, "prior_attention": prior, "kl": kl}
            return result if need_weights else {"output": out}
        if generator is None:
            raise ValueError("bayesian-attention-modules draws its noise from a torch.Generator")
        u = uniform(phi.shape, generator, phi)
        log_e = torch.log(-torch.log1p(-u))                                       # log(-log(1-u))
        log_s = log_lam + log_e / self.k                                          # log S
        w = torch.softmax(log_s, dim=-1)                                          # S / sum_j S
        out = self.o(merge_heads(w @ v))
        if not need_weights:
            return {"output": out}
        # log Weibull(S | k, lambda) = log k - log lambda + (k - 1) log(S / lambda) - (S / lambda)^k
        log_prob = math.log(self.k) - log_lam + (self.k - 1) * log_e / self.k - log_e.exp()
        return {"output": out, "attention": w, "unnormalized": log_s.exp(), "log_prob": log_prob,
                "prior_attention": prior, "kl": kl}


def _check(shapes, p):
    d = shapes["x"][2]
    return [] if d % p["heads"] == 0 else [f"D={d} is not divisible by heads={p['heads']}"]


MECHANISM = Mechanism(
    slug="bayesian-attention-modules",
    title="BAM self-attention: Weibull-sampled, normalised attention weights with a contextual Gamma prior",
    reference="Fan et al., NeurIPS 2020 (Bayesian Attention Modules), Sec. 3 (Weibull / contextual prior)",
    inputs=(InputSpec("x", ("B", "N", "D"), "tokens"),),
    outputs=(OutputSpec("output", ("B", "N", "D"), "concat_h(W V) W_O"),
             OutputSpec("attention", ("B", "h", "N", "N"), "attention weights W (sampled, rows sum to 1)",
                        attention=True),
             OutputSpec("unnormalized", ("B", "h", "N", "N"), "sampled unnormalised weights S", attention=True),
             OutputSpec("log_prob", ("B", "h", "N", "N"), "log Weibull density of each sampled S_ij",
                        attention=True),
             OutputSpec("prior_attention", ("B", "h", "N"), "contextual prior weights softmax_j(g(k_j))",
                        attention=True),
             OutputSpec("kl", ("B", "h", "N", "N"), "KL(Weibull || Gamma prior) per weight", attention=True)),
    hyperparams=(HyperParam("heads", "int", 4, "attention heads h", 1, 64),
                 HyperParam("k", "float", 10.0, "Weibull shape k (larger = less noise)", 0.1, 1e4),
                 HyperParam("beta", "float", 1.0, "Gamma prior rate beta (alpha = beta * prior weights)", 1e-4, 1e4),
                 HyperParam("prior_hidden", "int", 10, "hidden width of the key network g", 1, 1024),
                 HyperParam("training", "bool", True, "sample the weights (training behaviour); false = "
                            "deterministic mean softmax(Phi) as at test time")),
    build=lambda shapes, p: BayesianAttention(shapes["x"][2], p["heads"], p["k"], p["beta"], p["prior_hidden"],
                                              p["training"]),
    example_shapes={"x": (2, 6, 16)},
    test_shapes=({"x": (1, 1, 4)}, {"x": (3, 9, 12)}),
    constraints=("D divisible by heads",),
    check=_check,
    stochastic=True,
    notes="Follows the authors' released BAM code for the Weibull case with contextual prior (prior network "
          "Linear -> LeakyReLU(0.1) -> Linear on each key; alpha = beta * softmax). The lognormal variant is "
          "not included. The KL includes the constant terms (log k - gamma_e - 1) that the code drops.",
)
