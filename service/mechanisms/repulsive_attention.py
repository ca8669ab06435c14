"""Repulsive attention: multi-head attention whose heads are particles repelled by an SVGD kernel term.

An, Lyu, Zhang, Fan, Chen, "Repulsive Attention: Rethinking Multi-head Attention as Bayesian Inference",
EMNLP 2020, Sec. 3 (heads as particles of a posterior, updated with Stein variational gradient descent).

Shapes: x [B, N, D] -> output [B, N, D]; H heads of size d = D/H.
- Multi-head attention: O_h = softmax(Q_h K_h^T / sqrt(d)) V_h  (per head, [B, N, d])
- Particles: the head features O_h (flattened per batch element), h = 1..H.
- RBF kernel k(O_h', O_h) = exp(-||O_h' - O_h||^2 / b) with the median heuristic
  b = median_{h != h'} ||O_h - O_h'||^2 / log(H + 1)   (per batch element)
- SVGD repulsive term: phi_h = (1/H) sum_h' grad_{O_h'} k(O_h', O_h) = (2 / (b H)) sum_h' k(O_h', O_h) (O_h - O_h')
- Update of the head features: O_h <- O_h + epsilon * phi_h ; output = concat_h(O_h) W_O.
The SVGD driving term (kernel-weighted gradients of the training log-likelihood) needs the loss and is
outside an inference forward pass. The paper leaves inference unchanged, so the default step epsilon = 0
gives plain multi-head attention, with the kernel and the repulsive force still returned.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._matrix import off_diagonal
from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .heads import merge_heads, scaled_dot_product, split_heads


def repulsion(heads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """heads [B, H, N, d] -> (kernel [B, H, H], repulsive force [B, H, N, d])."""
    b, h = heads.shape[:2]
    flat = heads.reshape(b, h, -1)
    d2 = (flat.unsqueeze(2) - flat.unsqueeze(1)).pow(2).sum(-1)                  # [B, H, H]
    if h > 1:
        med = off_diagonal(d2).reshape(b, -1).median(dim=1).values
    else:
        med = torch.ones(b, dtype=heads.dtype, device=heads.device)
    bw = (med / math.log(h + 1)).clamp_min(1e-12)[:, None, None]
    kern = torch.exp(-d2 / bw)
    # sum_h' k(h', h) (O_h - O_h') = O_h * sum_h' k - sum_h' k O_h'
    force = (kern.sum(1)[:, :, None] * flat - kern.transpose(1, 2) @ flat) * (2.0 / (bw * h))
    return kern, force.reshape(heads.shape)


class RepulsiveAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 8, step: float = 0.0):
        super().__init__()
        self.heads, self.step = heads, step
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, need_weights: bool = True) -> dict[str, torch.Tensor]:
        q, k, v = (split_heads(f(x), self.heads) for f in (self.q, self.k, self.v))
        o, w = scaled_dot_product(q, k, v, need_weights=need_weights)
        kern, force = repulsion(o)
        o = o + self.step * force
        out = self.o(merge_heads(o))
        if not need_weights:
            return {"output": out}
        return {"output": out, "attention": w, "head_kernel": kern, "repulsive_force": force}


def _check(shapes, p):
    d = shapes["x"][2]
    return [] if d % p["heads"] == 0 else [f"D={d} is not divisible by heads={p['heads']}"]


MECHANISM = Mechanism(
    slug="repulsive-attention",
    title="Repulsive multi-head attention: heads as SVGD particles with an RBF-kernel repulsive update",
    reference="An et al., EMNLP 2020 (Repulsive Attention), Sec. 3 (SVGD on attention heads)",
    inputs=(InputSpec("x", ("B", "N", "D"), "tokens"),),
    outputs=(OutputSpec("output", ("B", "N", "D"), "concat_h(O_h + epsilon phi_h) W_O"),
             OutputSpec("attention", ("B", "H", "N", "N"), "per-head attention weights", attention=True),
             OutputSpec("head_kernel", ("B", "H", "H"), "RBF kernel between head particles", attention=True),
             OutputSpec("repulsive_force", ("B", "H", "N", "d"), "SVGD repulsive term phi_h per head",
                        attention=True)),
    hyperparams=(HyperParam("heads", "int", 8, "attention heads (particles) H", 1, 64),
                 HyperParam("step", "float", 0.0, "SVGD step epsilon applied to the head features "
                            "(0 = inference as in the paper)", 0.0, 10.0)),
    build=lambda shapes, p: RepulsiveAttention(shapes["x"][2], p["heads"], p["step"]),
    example_shapes={"x": (2, 5, 16)},
    test_shapes=({"x": (1, 1, 8)}, {"x": (3, 9, 24)}),
    constraints=("D divisible by heads",),
    check=_check,
    notes="UNCERTAIN DETAILS: the particles are taken to be the heads' output features (the paper applies "
          "SVGD to heads; whether to parameters or to attention features, and the exact bandwidth rule, "
          "could not be re-checked). Only the repulsive half of the SVGD direction can be evaluated without "
          "a training loss. Not stochastic.",
)
