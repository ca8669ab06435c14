"""Variational (categorical latent-alignment) attention.

Deng, Kim, Chiu, Guo, Rush, "Latent Alignment and Variational Attention", NeurIPS 2018, Sec. 2-3
(the categorical alignment variable z; the Dirichlet relaxation is not included).

Inputs: query q [B, M, D] (decoder states), source x [B, N, D] (encoder states), optional target
y [B, M, D] (features of the output token at each step, seen only by the inference network).
- Prior / attention distribution (Sec. 2): p(z = j | x, q) = softmax_j(q^T W_a x_j)      (bilinear score)
- Variational posterior (Sec. 3): q(z = j | x, y) = softmax_j([q; y]^T W_q x_j)
  (an amortised inference network that also sees the target; the paper conditions it on the whole
  target through a bi-LSTM, here it sees the target feature of the same step)
- Hard (latent) attention: z ~ q(z | x, y) when y is given, otherwise z ~ p(z | x, q); the attended
  vector is x_z. Drawn by inverting the CDF with u ~ U(0, 1) from the generator.
- Returned: the sampled index z, log of the sampling probability at z (the REINFORCE score term),
  KL(q || p) per step (the ELBO regulariser) when y is given, and the soft expectation sum_j p_j x_j.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .sampling import sample_categorical


class VariationalAttention(nn.Module):
    def __init__(self, dim: int, sample_from: str = "posterior"):
        super().__init__()
        self.prior = nn.Linear(dim, dim, bias=False)          # W_a
        self.posterior = nn.Linear(2 * dim, dim, bias=False)  # W_q
        self.sample_from = sample_from

    def forward(self, query: torch.Tensor, source: torch.Tensor, target: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if generator is None:
            raise ValueError("variational-attention samples z from a torch.Generator")
        log_p = torch.log_softmax(self.prior(query) @ source.transpose(1, 2), dim=-1)          # [B, M, N]
        out: dict[str, torch.Tensor] = {}
        log_q = None
        if target is not None:
            log_q = torch.log_softmax(self.posterior(torch.cat([query, target], -1)) @ source.transpose(1, 2), -1)
        log_s = log_q if (log_q is not None and self.sample_from == "posterior") else log_p
        z = sample_categorical(log_s.exp(), generator)                                        # [B, M]
        picked = torch.gather(source, 1, z.unsqueeze(-1).expand(-1, -1, source.shape[2]))      # x_z
        out["output"] = picked
        out["prior"] = log_p.exp()
        if log_q is not None:
            out["posterior"] = log_q.exp()
            out["kl"] = (log_q.exp() * (log_q - log_p)).sum(-1)
        out["sample"] = z
        out["log_prob"] = log_s.gather(-1, z.unsqueeze(-1)).squeeze(-1)
        out["soft_context"] = log_p.exp() @ source
        return out


MECHANISM = Mechanism(
    slug="variational-attention",
    title="Categorical variational attention: prior p(z|x,q), inference network q(z|x,y), sampled alignment x_z",
    reference="Deng et al., NeurIPS 2018 (Latent Alignment and Variational Attention), Secs. 2-3",
    inputs=(InputSpec("query", ("B", "M", "D"), "decoder states q_t"),
            InputSpec("source", ("B", "N", "D"), "encoder states x_1..x_N to align to"),
            InputSpec("target", ("B", "M", "D"), "target features y_t seen by the inference network", optional=True)),
    outputs=(OutputSpec("output", ("B", "M", "D"), "hard-attended vector x_z for the sampled z"),
             OutputSpec("prior", ("B", "M", "N"), "attention distribution p(z|x,q)", attention=True),
             OutputSpec("posterior", ("B", "M", "N"), "variational posterior q(z|x,y) (when target is given)",
                        attention=True),
             OutputSpec("kl", ("B", "M"), "KL(q(z|x,y) || p(z|x,q)) (when target is given)", attention=True),
             OutputSpec("sample", ("B", "M"), "sampled alignment z (index into N)", attention=True),
             OutputSpec("log_prob", ("B", "M"), "log-probability of z under the distribution it was drawn from",
                        attention=True),
             OutputSpec("soft_context", ("B", "M", "D"), "soft attention sum_j p_j x_j, for comparison",
                        attention=True)),
    hyperparams=(HyperParam("sample_from", "choice", "posterior",
                            "draw z from the posterior (training, needs target) or from the prior (test time)",
                            choices=("posterior", "prior")),),
    build=lambda shapes, p: VariationalAttention(shapes["query"][2], p["sample_from"]),
    example_shapes={"query": (2, 3, 8), "source": (2, 6, 8), "target": (2, 3, 8)},
    test_shapes=({"query": (1, 1, 4), "source": (1, 5, 4)}, {"query": (3, 7, 6), "source": (3, 2, 6)}),
    stochastic=True,
    notes="The score is Luong's bilinear 'general' form; the inference network is simplified to a bilinear "
          "score on the concatenation [q_t; y_t] (the paper encodes the whole target with a bi-LSTM). Without "
          "a target, z is drawn from the prior. Training estimators (REINFORCE with baseline, K samples) are "
          "outside the forward pass; log_prob is what they differentiate.",
)
