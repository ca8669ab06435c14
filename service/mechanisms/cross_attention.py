"""Cross Attention Module (CAM) of the Cross Attention Network for few-shot classification.

Hou, Chang, Ma, Shan, Chen, "Cross Attention Network for Few-shot Classification", NeurIPS 2019.

Inputs: a class (support prototype) feature P [B, C, H, W] and a query feature Q [B, C, H, W] taken
from the same backbone; m = H*W. Outputs: the attended query Q^b [B, C, H, W] ("output"), the
attended class feature P^b, and the spatial attention maps A^q, A^p [B, H, W].
- Correlation layer (Sec. 3.2, Eq. 1): R^p_{ij} = <p_i / ||p_i||, q_j / ||q_j||>  (cosine), R^p [m, m];
  R^q = (R^p)^T.
- Meta-fusion layer (Eq. 2): the m columns of R^p are m correlation maps over the class positions i;
  their global average pooling gives a vector in R^m, and the fusion kernel is
  w^p = W_2 ReLU(W_1 GAP(R^p)), W_1 [m/r, m], W_2 [m, m/r] (same meta-learner for R^q -> w^q).
- Attention (Eq. 3): A^p_i = exp((w^p)^T r^p_i / tau) / sum_j exp((w^p)^T r^p_j / tau), r^p_i the i-th
  row of R^p; likewise A^q from R^q and w^q. tau is the temperature (paper: 0.025).
- Output (Sec. 3.2): P^b = P * (1 + A^p), Q^b = Q * (1 + A^q) (residual attention).
The meta-learner layers carry no biases; the few-shot episode machinery (prototype averaging over
shots, transductive iteration) is outside the module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class CrossAttentionModule(nn.Module):
    def __init__(self, positions: int, reduction: int = 6, temperature: float = 0.025):
        super().__init__()
        self.temperature = temperature
        hidden = max(1, positions // reduction)
        self.w1 = nn.Linear(positions, hidden, bias=False)
        self.w2 = nn.Linear(hidden, positions, bias=False)

    def _attention(self, r: torch.Tensor) -> torch.Tensor:
        """r [B, m(i), m(j)] -> A [B, m(i)]: meta-fusion kernel over j, softmax over i."""
        kernel = self.w2(torch.relu(self.w1(r.mean(dim=1))))                 # Eq. 2: GAP over i
        return torch.softmax((r @ kernel[:, :, None])[..., 0] / self.temperature, dim=1)  # Eq. 3

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, h, w = query.shape
        p = F.normalize(support.flatten(2), dim=1)                            # [B, C, m]
        q = F.normalize(query.flatten(2), dim=1)
        r_p = p.transpose(1, 2) @ q                                           # Eq. 1: R^p [B, m, m]
        a_p = self._attention(r_p).reshape(b, h, w)
        a_q = self._attention(r_p.transpose(1, 2)).reshape(b, h, w)
        return {"output": query * (1 + a_q[:, None]),
                "support_output": support * (1 + a_p[:, None]),
                "query_attention": a_q,
                "support_attention": a_p}


MECHANISM = Mechanism(
    slug="cross-attention",
    title="Cross Attention Module (CAM): cosine correlation, meta-fusion kernel, temperature softmax "
          "spatial attention on class and query features",
    reference="Hou et al., NeurIPS 2019, Sec. 3.2 (correlation layer, meta-fusion layer, Eqs. 1-3)",
    inputs=(InputSpec("query", ("B", "C", "H", "W"), "query-sample feature Q"),
            InputSpec("support", ("B", "C", "H", "W"), "class (support prototype) feature P")),
    outputs=(OutputSpec("output", ("B", "C", "H", "W"), "attended query feature Q * (1 + A^q)"),
             OutputSpec("support_output", ("B", "C", "H", "W"), "attended class feature P * (1 + A^p)"),
             OutputSpec("query_attention", ("B", "H", "W"), "A^q, sums to 1 over positions", attention=True),
             OutputSpec("support_attention", ("B", "H", "W"), "A^p, sums to 1 over positions", attention=True)),
    hyperparams=(
        HyperParam("reduction", "int", 6, "meta-learner bottleneck ratio r (hidden = H*W // r)", 1, 4096),
        HyperParam("temperature", "float", 0.025, "softmax temperature tau (paper: 0.025)", 1e-4, 100.0),
    ),
    build=lambda shapes, p: CrossAttentionModule(shapes["query"][2] * shapes["query"][3], p["reduction"],
                                                 p["temperature"]),
    example_shapes={"query": (2, 16, 6, 6), "support": (2, 16, 6, 6)},
    test_shapes=({"query": (1, 8, 5, 3), "support": (1, 8, 5, 3)},
                 {"query": (3, 4, 1, 1), "support": (3, 4, 1, 1)}),
    constraints=("query and support have the same shape [B, C, H, W]",),
    notes="The meta-learner's weight shapes depend on m = H*W. Hidden size is max(1, m // reduction).",
)
