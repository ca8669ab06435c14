"""Set Transformer block: a Set Attention Block (SAB) encoder followed by Pooling by Multihead
Attention (PMA), the permutation-invariant part.

Lee, Lee, Kim, Kosiorek, Choi, Teh, "Set Transformer: A Framework for Attention-based
Permutation-Invariant Neural Networks", ICML 2019, Sec. 3.1-3.2.

Shapes: x [B, N, D] (a set of N elements) -> output [B, S, D] (S = number of seed vectors).
- Multihead(Q, K, V) = concat(O_1..O_h) W^O, O_j = softmax(Q W_j^Q (K W_j^K)^T / sqrt(D/h)) V W_j^V  (Eq. 5)
- MAB(X, Y) = LayerNorm(H + rFF(H)),  H = LayerNorm(X + Multihead(X, Y, Y))                       (Eq. 6)
- SAB(X) = MAB(X, X)                                                                             (Eq. 7)
- PMA_S(Z) = MAB(S, rFF(Z)) with S [S, D] learnable seed vectors                                  (Eq. 11)
- output = PMA_S(SAB(x)): invariant to permutations of the N elements.
rFF is a row-wise Linear + ReLU (as in the authors' code); every MAB has its own weights. With
``layer_norm=False`` the two LayerNorms are left out (the authors' code default).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .heads import merge_heads, scaled_dot_product, split_heads


class Multihead(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, y, need_weights=True):
        q, k, v = (split_heads(f(t), self.heads) for f, t in ((self.q, x), (self.k, y), (self.v, y)))
        out, w = scaled_dot_product(q, k, v, need_weights=need_weights)
        return self.o(merge_heads(out)), w


class RowFF(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        return torch.relu(self.fc(x))


class MAB(nn.Module):
    def __init__(self, dim: int, heads: int, layer_norm: bool):
        super().__init__()
        self.attn = Multihead(dim, heads)
        self.rff = RowFF(dim)
        self.ln1 = nn.LayerNorm(dim) if layer_norm else nn.Identity()
        self.ln2 = nn.LayerNorm(dim) if layer_norm else nn.Identity()

    def forward(self, x, y, need_weights=True):
        a, w = self.attn(x, y, need_weights)
        h = self.ln1(x + a)
        return self.ln2(h + self.rff(h)), w


class SetTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int = 4, seeds: int = 1, layer_norm: bool = True):
        super().__init__()
        self.sab = MAB(dim, heads, layer_norm)
        self.seeds = nn.Parameter(torch.empty(seeds, dim))
        nn.init.xavier_uniform_(self.seeds)
        self.pool_rff = RowFF(dim)
        self.pma = MAB(dim, heads, layer_norm)

    def forward(self, x: torch.Tensor, need_weights: bool = True) -> dict[str, torch.Tensor]:
        z, w_enc = self.sab(x, x, need_weights)                                   # SAB(X)
        s = self.seeds.unsqueeze(0).expand(x.shape[0], -1, -1)
        out, w_pool = self.pma(s, self.pool_rff(z), need_weights)                 # PMA_S(Z)
        if not need_weights:
            return {"output": out}
        return {"output": out, "encoder_attention": w_enc, "pooling_attention": w_pool}


def _check(shapes, p):
    d = shapes["x"][2]
    return [] if d % p["heads"] == 0 else [f"D={d} is not divisible by heads={p['heads']}"]


MECHANISM = Mechanism(
    slug="permutation-invariant-attention",
    title="Set Transformer block: SAB encoder + PMA pooling (permutation-invariant set summary)",
    reference="Lee et al., ICML 2019 (Set Transformer), Eqs. 5-7 and 11",
    inputs=(InputSpec("x", ("B", "N", "D"), "a set of N elements with D features (order is irrelevant)"),),
    outputs=(OutputSpec("output", ("B", "S", "D"), "PMA_S(SAB(x)): S pooled set vectors"),
             OutputSpec("encoder_attention", ("B", "h", "N", "N"), "SAB self-attention weights", attention=True),
             OutputSpec("pooling_attention", ("B", "h", "S", "N"), "PMA weights of the seeds over the set",
                        attention=True)),
    hyperparams=(HyperParam("heads", "int", 4, "attention heads h", 1, 64),
                 HyperParam("seeds", "int", 1, "number of seed vectors S (outputs of PMA)", 1, 256),
                 HyperParam("layer_norm", "bool", True, "use the LayerNorms of Eq. 6")),
    build=lambda shapes, p: SetTransformerBlock(shapes["x"][2], p["heads"], p["seeds"], p["layer_norm"]),
    example_shapes={"x": (2, 7, 16)},
    test_shapes=({"x": (1, 1, 8)}, {"x": (3, 11, 12)}),
    constraints=("D divisible by heads",),
    check=_check,
    notes="The Set Transformer's decoder in the paper is rFF(SAB(PMA_k(Z))) after a two-SAB encoder; this "
          "entry implements the defining pair, one SAB and one PMA. Attention is exactly the multi-head "
          "scaled dot-product attention of torch.nn.MultiheadAttention (no dropout).",
)
