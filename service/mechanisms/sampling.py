"""Seeded random draws for the stochastic (hard) attention mechanisms."""

from __future__ import annotations

import torch


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
