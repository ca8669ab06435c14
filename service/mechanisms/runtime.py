"""Building, weight loading and execution of mechanisms, shared by the API, the CLI and the tests."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Mapping
from functools import cache
from typing import Any

import torch
from torch import nn

from .base import Mechanism, MechanismInputError, Shapes

# Module construction draws initial weights from torch's CPU generator; the lock plus fork_rng keep
# concurrent builds from seeing each other's seeds and leave the process-wide state untouched.
_BUILD_LOCK = threading.Lock()


def build_module(mech: Mechanism, shapes: Shapes, params: Mapping[str, Any], seed: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> nn.Module:
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        module = mech.build(shapes, params)
    module.eval()
    return module.to(device=device, dtype=dtype)


def parameter_shapes(mech: Mechanism, shapes: Shapes, params: Mapping[str, Any]) -> dict[str, list[int]]:
    """Names and shapes of every weight (the module's state_dict) without allocating memory."""
    with torch.device("meta"):
        module = mech.build(shapes, params)
    return {name: list(t.shape) for name, t in module.state_dict().items()}


def load_weights(module: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Load client weights strictly; every problem is reported at once."""
    expected = module.state_dict()
    problems = []
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing:
        problems.append(f"missing weights {missing}")
    if unexpected:
        problems.append(f"unexpected weights {unexpected}")
    for name in sorted(set(expected) & set(weights)):
        if tuple(weights[name].shape) != tuple(expected[name].shape):
            problems.append(f"weight '{name}' has shape {list(weights[name].shape)}, "
                            f"expected {list(expected[name].shape)}")
    if problems:
        raise MechanismInputError("; ".join(problems), field="weights",
                                  expected="exactly the names and shapes listed by GET .../implementation")
    ref = next(iter(expected.values()), None)
    with torch.no_grad():
        module.load_state_dict({k: v.to(dtype=expected[k].dtype if expected[k].is_floating_point() else v.dtype,
                                        device=ref.device if ref is not None else "cpu")
                                for k, v in weights.items()}, strict=True)


@cache
def takes_need_weights(cls: type) -> bool:
    return "need_weights" in inspect.signature(cls.forward).parameters


def forward(mech: Mechanism, module: nn.Module, inputs: Mapping[str, torch.Tensor], seed: int = 0,
            need_weights: bool = True) -> dict[str, torch.Tensor]:
    """Run the module. With ``need_weights=False`` a module whose forward accepts ``need_weights``
    may take a fused path (e.g. scaled_dot_product_attention) and leave attention outputs out."""
    kwargs: dict[str, Any] = dict(inputs)
    if not need_weights and takes_need_weights(type(module)):
        kwargs["need_weights"] = False
    if mech.stochastic:
        device = next(iter(inputs.values())).device
        kwargs["generator"] = torch.Generator(device=device).manual_seed(seed)
    with torch.inference_mode():
        out = module(**kwargs)
    if not isinstance(out, dict) or "output" not in out:
        raise RuntimeError(f"{mech.slug}: forward must return a dict with 'output'")
    return out


def run(mech: Mechanism, inputs: Mapping[str, torch.Tensor], params: Mapping[str, Any] | None = None,
        seed: int = 0, weights: Mapping[str, torch.Tensor] | None = None,
        dtype: torch.dtype = torch.float32, need_weights: bool = True) -> dict[str, torch.Tensor]:
    """Validate, build, optionally load weights, and run: the whole path in one call."""
    shapes = {k: tuple(v.shape) for k, v in inputs.items()}
    resolved = mech.validate(shapes, params)
    module = build_module(mech, shapes, resolved, seed, dtype=dtype)
    if weights is not None:
        load_weights(module, weights)
    return forward(mech, module, {k: v.to(dtype) for k, v in inputs.items()}, seed, need_weights)
