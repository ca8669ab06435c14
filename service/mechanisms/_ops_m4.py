"""Small helpers shared by the m4 mechanisms (multi-head attention plumbing and sampling)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, D] -> [B, heads, N, D // heads]."""
    b, n, d = x.shape
    return x.reshape(b, n, heads, d // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, d] -> [B, N, heads * d]."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, need_weights: bool = True,
           bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(d) + bias) v on [B, h, N, d] tensors.

    With ``need_weights`` the weights are computed explicitly and returned; otherwise the fused
    ``scaled_dot_product_attention`` kernel is used and ``None`` is returned for the weights."""
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias), None
    logits = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if bias is not None:
        logits = logits + bias
    w = logits.softmax(dim=-1)
    return w @ v, w


def uniform(shape, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """U(0, 1) noise drawn from ``generator`` on the device of ``like``, cast to its dtype.

    The draw is always made in float64 so that the same seed gives the same noise whatever the
    computation dtype; it is clamped to [1e-30, 1 - 2**-24] so that logs of u and 1 - u stay finite."""
    u = torch.rand(*shape, generator=generator, dtype=torch.float64, device=like.device)
    return u.clamp(1e-30, 1 - 2.0 ** -24).to(like.dtype)


def sample_categorical(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of ``probs`` [..., N] by inverting the CDF with U[0,1) noise -> int64 [...]."""
    u = uniform(probs.shape[:-1], generator, probs)
    cdf = probs.cumsum(dim=-1)
    idx = (cdf <= u.unsqueeze(-1)).sum(dim=-1)
    return idx.clamp_max(probs.shape[-1] - 1)
