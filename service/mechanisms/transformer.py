"""Transformer encoder layer (multi-head scaled dot-product self-attention + feed-forward).

Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin, "Attention Is All You Need",
NeurIPS (NIPS) 2017. The survey's entry is the whole architecture; this is the block that defines
it: one encoder layer (Sec. 3.1) on tokens.

Shapes: x [B, N, D] -> output [B, N, D], attention [B, h, N, N].
- Optional sinusoidal positional encoding (Sec. 3.5): PE(pos, 2i) = sin(pos / 10000^(2i/D)),
  PE(pos, 2i+1) = cos(pos / 10000^(2i/D)), added to x.
- Scaled dot-product attention (Eq. 1): Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V,
  d_k = D / h; with ``causal`` the logits of future positions are set to -inf (Sec. 3.2.3).
- Multi-head attention (Sec. 3.2.2): head_i = Attention(x W_i^Q, x W_i^K, x W_i^V),
  MultiHead = Concat(head_1..head_h) W^O. The projections are plain matrices, as in the paper.
- Residual + layer norm around each sub-layer (Sec. 3.1, post-norm): LayerNorm(x + Sublayer(x)).
- Position-wise feed-forward network (Eq. 2): FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, d_ff = ffn_ratio * D.
Dropout (P_drop = 0.1 in training) is left out: modules run at inference.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import HyperParam, InputSpec, Mechanism, OutputSpec
from .heads import divisible, merge_heads, scaled_dot_product, split_heads


def sinusoidal_encoding(n: int, d: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Sec. 3.5 positional encoding, [n, d]."""
    pos = torch.arange(n, dtype=torch.float64, device=device)[:, None]
    i2 = torch.arange(0, d, 2, dtype=torch.float64, device=device)
    angle = pos / torch.pow(10000.0, i2 / d)
    pe = torch.zeros(n, d, dtype=torch.float64, device=device)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d // 2])
    return pe.to(dtype)


class MultiHeadAttention(nn.Module):
    """Sec. 3.2.2: h parallel scaled dot-product attentions on learned projections, then W^O."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)   # W^Q (all heads stacked)
        self.k_proj = nn.Linear(dim, dim, bias=False)   # W^K
        self.v_proj = nn.Linear(dim, dim, bias=False)   # W^V
        self.out_proj = nn.Linear(dim, dim, bias=False)  # W^O

    def forward(self, x: torch.Tensor, causal: bool = False, need_weights: bool = True):
        q = split_heads(self.q_proj(x), self.heads)
        k = split_heads(self.k_proj(x), self.heads)
        v = split_heads(self.v_proj(x), self.heads)
        mask = None
        if causal:
            n = x.shape[1]
            mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        out, weights = scaled_dot_product(q, k, v, need_weights=need_weights, mask=mask)  # Eq. 1
        return self.out_proj(merge_heads(out)), weights


class TransformerEncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int = 8, ffn_ratio: int = 4, causal: bool = False,
                 positional_encoding: bool = False):
        super().__init__()
        self.causal = causal
        self.positional_encoding = positional_encoding
        self.self_attn = MultiHeadAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn1 = nn.Linear(dim, ffn_ratio * dim)  # W_1, b_1
        self.ffn2 = nn.Linear(ffn_ratio * dim, dim)  # W_2, b_2
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, need_weights: bool = True) -> dict[str, torch.Tensor]:
        if self.positional_encoding:
            x = x + sinusoidal_encoding(x.shape[1], x.shape[2], x.dtype, x.device)
        a, weights = self.self_attn(x, causal=self.causal, need_weights=need_weights)
        x = self.norm1(x + a)                                        # LayerNorm(x + MultiHead(x))
        x = self.norm2(x + self.ffn2(torch.relu(self.ffn1(x))))      # Eq. 2, LayerNorm(x + FFN(x))
        out = {"output": x}
        if weights is not None:
            out["attention"] = weights
        return out


def _check(shapes, params):
    d = shapes["x"][2]
    problems = divisible("D", d, "heads", params["heads"])
    if params["positional_encoding"] and d % 2:
        problems.append(f"D={d} must be even for the sinusoidal positional encoding")
    return problems


MECHANISM = Mechanism(
    slug="transformer",
    title="Transformer encoder layer: multi-head scaled dot-product self-attention, add & norm, "
          "position-wise FFN, add & norm (the block that defines the architecture)",
    reference="Vaswani et al., NeurIPS 2017, Eq. 1 (scaled dot-product attention), Sec. 3.2.2 (multi-head), "
              "Eq. 2 (FFN), Sec. 3.1 (residual + LayerNorm), Sec. 3.5 (positional encoding)",
    inputs=(InputSpec("x", ("B", "N", "D"), "token sequence (the layer's input embeddings)"),),
    outputs=(OutputSpec("output", ("B", "N", "D"), "encoder layer output"),
             OutputSpec("attention", ("B", "heads", "N", "N"),
                        "softmax(QK^T/sqrt(d_k)) per head; each row sums to 1", attention=True)),
    hyperparams=(
        HyperParam("heads", "int", 8, "number of attention heads h (8 in the base model)", 1, 1024),
        HyperParam("ffn_ratio", "int", 4, "d_ff / D (2048 / 512 = 4 in the base model)", 1, 16),
        HyperParam("causal", "bool", False, "mask future positions (decoder self-attention, Sec. 3.2.3)"),
        HyperParam("positional_encoding", "bool", False, "add the sinusoidal positional encoding to x first"),
    ),
    build=lambda shapes, p: TransformerEncoderLayer(shapes["x"][2], p["heads"], p["ffn_ratio"], p["causal"],
                                                    p["positional_encoding"]),
    example_shapes={"x": (2, 10, 32)},
    test_shapes=({"x": (1, 7, 16)}, {"x": (3, 1, 64)}),
    constraints=("D divisible by heads", "D even when positional_encoding is on"),
    check=_check,
    notes="Post-norm encoder layer as in the paper; projections W^Q, W^K, W^V, W^O have no bias (plain "
          "matrices in Sec. 3.2.2), the FFN has biases (Eq. 2). Dropout is omitted (inference). "
          "LayerNorm eps is 1e-5. The same layer equals torch.nn.TransformerEncoderLayer(norm_first=False, "
          "activation='relu', dropout=0) with zero attention biases.",
)
