"""Random Feature Attention (RFA), a multi-head attention layer with linear cost in N.

Peng, Pappas, Yogatama, Schwartz, Smith, Kong, "Random Feature Attention", ICLR 2021.

Shapes: x [B, N, E] -> output [B, N, E]; attention [B, heads, N, N] (the weights RFA implies,
computed only when asked for); gates [B, heads, N] for the gated variant. d = E / heads.
- q, k, v = x W_q, x W_k, x W_v split into heads; q and k are l2-normalised (Sec. 3.1).
- Random Fourier features (Eq. 3 / Theorem 1): phi(x) = sqrt(1/D) [sin(w_1.x) ... sin(w_D.x),
  cos(w_1.x) ... cos(w_D.x)], w_i = sigma * u_i, u_i ~ N(0, I_d) (the paper writes w_i ~ N(0, sigma^2 I)).
  E[phi(x).phi(y)] = exp(-sigma^2 ||x - y||^2 / 2), which for unit vectors is proportional to
  exp(sigma^2 x.y): RFA estimates softmax attention with inverse temperature sigma^2.
- Non-causal RFA (Eq. 5): h_t = phi(q_t)^T sum_i phi(k_i) v_i^T / (phi(q_t) . sum_j phi(k_j)).
- Causal RFA (Eq. 6): S_t = S_{t-1} + phi(k_t) v_t^T, z_t = z_{t-1} + phi(k_t),
  h_t = phi(q_t)^T S_t / (phi(q_t) . z_t).
- Gated causal RFA (Eq. 7): g_t = sigmoid(w_g . x_t + b_g) per head,
  S_t = g_t S_{t-1} + (1 - g_t) phi(k_t) v_t^T, z_t = g_t z_t-1 + (1 - g_t) phi(k_t).
- Heads are concatenated and projected by W_o.
The random vectors u are a buffer drawn when the module is built (from the build seed) and can be
replaced through the weights like any parameter; the paper redraws them during training and keeps
them fixed at inference, which is what this forward does. sigma is a fixed hyper-parameter here
(the paper also allows learning it). The denominator is not guarded: like the paper's estimator it
can come close to zero for small D.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec


class RandomFeatureAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 4, num_features: int = 64, sigma: float = 1.0,
                 causal: bool = False, gated: bool = False):
        super().__init__()
        self.heads, self.sigma, self.causal, self.gated = heads, sigma, causal, gated
        d = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("random_directions", torch.randn(heads, num_features, d))  # u_i
        if gated:
            self.gate = nn.Linear(dim, heads)                                              # w_g, b_g per head

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """[B, h, N, d] -> phi [B, h, N, 2D]."""
        proj = torch.einsum("bhnd,hfd->bhnf", x, self.sigma * self.random_directions)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1) / math.sqrt(proj.shape[-1])

    def forward(self, x: torch.Tensor, need_weights: bool = True) -> dict[str, torch.Tensor]:
        b, n, e = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        pq, pk = self.feature_map(F.normalize(q, dim=-1)), self.feature_map(F.normalize(k, dim=-1))
        out: dict[str, torch.Tensor] = {}
        if not self.causal:                                                     # Eq. 5
            s = torch.einsum("bhnf,bhne->bhfe", pk, v)                          # sum_i phi(k_i) v_i^T
            z = pk.sum(dim=2)                                                   # sum_j phi(k_j)
            h = torch.einsum("bhnf,bhfe->bhne", pq, s) / torch.einsum("bhnf,bhf->bhn", pq, z)[..., None]
            if need_weights:
                w = pq @ pk.transpose(-1, -2)
                out["attention"] = w / w.sum(-1, keepdim=True)
        else:                                                                   # Eqs. 6-7: recurrence
            g = torch.sigmoid(self.gate(x)).transpose(1, 2) if self.gated else None  # [B, h, N]
            s = pq.new_zeros(b, self.heads, pq.shape[-1], v.shape[-1])
            z = pq.new_zeros(b, self.heads, pq.shape[-1])
            rows = []
            for t in range(n):
                kv, kt = pk[:, :, t, :, None] * v[:, :, t, None, :], pk[:, :, t]
                if g is None:
                    s, z = s + kv, z + kt
                else:
                    gt = g[:, :, t, None]
                    s, z = gt[..., None] * s + (1 - gt)[..., None] * kv, gt * z + (1 - gt) * kt
                qt = pq[:, :, t]
                rows.append(torch.einsum("bhf,bhfe->bhe", qt, s) / (qt * z).sum(-1, keepdim=True))
            h = torch.stack(rows, dim=2)
            if need_weights:
                w = pq @ pk.transpose(-1, -2)
                if g is None:
                    c = torch.ones(n, n, dtype=x.dtype, device=x.device).tril().expand(b, self.heads, n, n)
                else:   # weight of key i at step t >= i: (1 - g_i) prod_{i < j <= t} g_j
                    cum = torch.cumsum(torch.log(g), dim=-1)
                    c = ((1 - g)[:, :, None, :] * torch.exp(cum[..., :, None] - cum[..., None, :])).tril()
                w = w * c
                out["attention"] = w / w.sum(-1, keepdim=True)
            if g is not None:
                out["gates"] = g
        y = self.proj(h.transpose(1, 2).reshape(b, n, e))
        return {"output": y, **out}


def _check(shapes, params):
    e = shapes["x"][2]
    problems = []
    if e % params["heads"]:
        problems.append(f"E={e} is not divisible by heads={params['heads']}")
    if params["gated"] and not params["causal"]:
        problems.append("gated=true needs causal=true (the gate acts on the recurrent state)")
    return problems


MECHANISM = Mechanism(
    slug="random-feature-attention",
    title="Random Feature Attention layer (multi-head; non-causal, causal or gated causal)",
    reference="Peng et al., ICLR 2021, Eqs. 3, 5-7",
    inputs=(InputSpec("x", ("B", "N", "E"), "token sequence"),),
    outputs=(OutputSpec("output", ("B", "N", "E"), "RFA output after W_o"),
             OutputSpec("attention", ("B", "heads", "N", "N"),
                        "attention weights implied by the random features (rows sum to 1, may be negative)",
                        attention=True),
             OutputSpec("gates", ("B", "heads", "N"), "forget gates g_t (gated variant only)", attention=True)),
    hyperparams=(
        HyperParam("heads", "int", 4, "attention heads (E divisible by heads)", 1, 64),
        HyperParam("num_features", "int", 64, "random features D (phi has 2D entries)", 1, 16384),
        HyperParam("sigma", "float", 1.0, "scale of the random directions (inverse temperature sigma^2)",
                   1e-3, 100.0),
        HyperParam("causal", "bool", False, "causal (recurrent) RFA, Eq. 6"),
        HyperParam("gated", "bool", False, "gated recurrence, Eq. 7 (needs causal)"),
    ),
    build=lambda shapes, p: RandomFeatureAttention(shapes["x"][2], p["heads"], p["num_features"], p["sigma"],
                                                   p["causal"], p["gated"]),
    example_shapes={"x": (2, 7, 16)},
    test_shapes=({"x": (1, 1, 8)}, {"x": (3, 13, 12)}),
    constraints=("E divisible by heads", "gated requires causal"),
    check=_check,
    notes="Random directions are a (persistent) buffer drawn at build time from the seed. sigma fixed. "
          "With need_weights=False the N x N implied attention is not formed (linear cost).",
)
