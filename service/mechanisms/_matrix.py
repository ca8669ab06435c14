"""Small matrix helpers shared by mechanisms."""

from __future__ import annotations

import torch


def off_diagonal(x: torch.Tensor) -> torch.Tensor:
    """[..., n, n] -> [..., n, n - 1]: each row without its diagonal entry, in order.

    The same values as boolean indexing with ``~eye(n)``, but without a data-dependent gather, so it
    also runs on the meta device (where the run budget traces the forward pass)."""
    n = x.shape[-1]
    if n < 2:
        return x[..., :0]
    flat = x.reshape(*x.shape[:-2], n * n)[..., 1:]
    return flat.reshape(*x.shape[:-2], n - 1, n + 1)[..., :-1].reshape(*x.shape[:-2], n, n - 1)
