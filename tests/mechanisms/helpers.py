"""Small utilities shared by the mechanism tests."""

from __future__ import annotations

import torch


def randomise_batchnorm(module: torch.nn.Module, seed: int, mean_scale: float = 0.1, bias_shift: float = 0.0) -> None:
    """Give every BatchNorm2d non-trivial running statistics and affine parameters, so a reference
    computation must apply them exactly (identity statistics would hide a missing or misplaced norm)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * mean_scale)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1 + bias_shift)
