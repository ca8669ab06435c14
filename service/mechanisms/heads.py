"""Multi-head attention plumbing shared by the token mechanisms: head split/merge, scaled dot product."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def scaled_dot_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, need_weights: bool = True,
                       bias: torch.Tensor | None = None, mask: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(d) + bias) v over the last two dims.

    q [..., Nq, d], k [..., Nk, d], v [..., Nk, dv]; ``bias`` is an additive float term and ``mask`` a
    boolean tensor (True = may attend), both broadcastable to [..., Nq, Nk]. With ``need_weights``
    the weights are computed explicitly and returned; otherwise the fused
    ``scaled_dot_product_attention`` kernel is used and ``None`` is returned for the weights.
    """
    if bias is not None and mask is not None:
        bias = bias.masked_fill(~mask, float("-inf"))
        mask = None
    if not need_weights:
        attn_mask = bias if bias is not None else mask
        if attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype) if attn_mask.is_floating_point() else attn_mask
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask), None
    logits = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    weights = logits.softmax(dim=-1)
    return weights @ v, weights


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, h*d] -> [B, h, N, d]."""
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, h, N, d] -> [B, N, h*d]."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def divisible(name_a: str, a: int, name_b: str, b: int) -> list[str]:
    """A validation message when ``a`` is not a multiple of ``b`` (e.g. dim and heads), else none."""
    return [] if b > 0 and a % b == 0 else [f"{name_a}={a} is not divisible by {name_b}={b}"]
