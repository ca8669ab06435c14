"""The cost of a run, known before anything real is allocated.

The module is built on PyTorch's meta device (shapes and dtypes, no storage) and its forward pass runs
there under a dispatch mode that follows every storage the pass creates and frees: the largest total
alive at once is the pass's activation peak. Weights, inputs converted to the run's dtype and the
outputs come on top. The same pass counts parameters and floating-point operations and yields the
output shapes, so the worker knows how much room the answer needs.

Data-dependent steps have no meta form; the pass handles the ones the mechanisms use: a random draw
takes a stand-in generator, and a Python decision taken on a tensor value (``bool(t)``, ``t.item()``)
sees zero — a mechanism whose branches allocate alike (attention dropout) is measured either way.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..mechanisms import runtime
from ..mechanisms.base import Mechanism

ITEMSIZE = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
                "float16": torch.float16}
_SCALARS = {torch.ops.aten._local_scalar_dense.default: 0, torch.ops.aten.is_nonzero.default: False}


class _LiveBytes(TorchDispatchMode):
    """Tracks bytes of storages created during the pass while they are alive; ``peak`` is their maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: dict[int, int] = {}

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._seen:
            return
        n = storage.nbytes()
        self._seen[key] = n
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        n = self._seen.pop(key, None)
        if n is not None:
            self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _SCALARS:
            return _SCALARS[func]
        if kwargs.get("generator") is not None:
            kwargs["generator"] = None
        # composite operators (linear, einsum, ...) are followed through their decomposition, so the
        # temporaries they create inside (an einsum's broadcast product) are counted too
        with self:  # re-entered, so the decomposition's own operators come back through this mode
            out = func.decompose(*args, **kwargs)
        if out is not NotImplemented:
            return out  # its parts were tracked as they ran
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "meta":
                self._track(t)
        self.peak = max(self.peak, self.live + _scratch(func, args))
        return out


_CONVOLUTIONS = {torch.ops.aten.convolution.default, torch.ops.aten._convolution.default}


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _scratch(func, args) -> int:
    """Memory a CPU kernel takes for itself while it runs, beyond its outputs: a convolution reorders
    its input and weights into the layout its library computes in; other kernels make a contiguous
    copy of each strided operand."""
    tensors = [a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)]
    if func in _CONVOLUTIONS:
        return sum(_nbytes(t) for t in tensors[:2])
    return sum(_nbytes(t) for t in tensors if not t.is_contiguous())


@dataclass
class Estimate:
    parameters: int
    weight_bytes: int
    activation_peak_bytes: int
    outputs: dict[str, tuple[list[int], str]]  # name -> (shape, dtype name)
    flops: int | None
    notes: list[str] = field(default_factory=list)

    def output_bytes(self, names: set[str] | None = None) -> int:
        total = 0
        for name, (shape, dtype) in self.outputs.items():
            if names is None or name in names:
                total += math.prod(shape) * torch.empty((), dtype=getattr(torch, dtype)).element_size()
        return total

    def total_bytes(self, input_bytes: int, overhead: int) -> int:
        return self.weight_bytes + input_bytes + self.activation_peak_bytes + overhead


def element_size(dtype_name: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype_name)).element_size()


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def meta_module(mech: Mechanism, shapes: dict[str, tuple[int, ...]], params: dict[str, Any],
                dtype: torch.dtype) -> torch.nn.Module:
    with torch.device("meta"):
        module = mech.build(shapes, params)
    module.eval().requires_grad_(False)
    return module.to(dtype=dtype)


def estimate(mech: Mechanism, shapes: dict[str, tuple[int, ...]], params: dict[str, Any], dtype_name: str,
             need_weights: bool, max_parameters: int | None = None) -> Estimate:
    """Parameters, weight bytes, activation peak, output shapes and FLOPs of one forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    dtype = TORCH_DTYPES[dtype_name]
    module = meta_module(mech, shapes, params, dtype)
    parameters = sum(p.numel() for p in module.parameters())
    weight_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    if max_parameters is not None and parameters > max_parameters:
        return Estimate(parameters, weight_bytes, 0, {}, None, ["not run: over the parameter limit"])
    inputs = {name: torch.empty(shape, device="meta", dtype=dtype) for name, shape in shapes.items()}
    kwargs: dict[str, Any] = dict(inputs)
    if not need_weights and runtime.takes_need_weights(type(module)):
        kwargs["need_weights"] = False
    if mech.stochastic:
        kwargs["generator"] = torch.Generator()  # a stand-in: the tracking mode drops it from every op
    live = _LiveBytes()
    flops: int | None
    counter = FlopCounterMode(display=False)
    with counter, live, torch.inference_mode():
        out = module(**kwargs)
    flops = int(counter.get_total_flops()) if not mech.stochastic else None
    outputs = {k: (list(v.shape), _dtype_name(v)) for k, v in out.items() if isinstance(v, torch.Tensor)}
    del out
    return Estimate(parameters, weight_bytes, live.peak, outputs, flops)


class EstimateCache:
    """Estimates keyed by (slug, shapes, hyper-parameters, dtype, need_weights); bounded LRU."""

    def __init__(self, size: int = 512):
        self.size = size
        self._items: OrderedDict[tuple, Estimate] = OrderedDict()

    def get(self, mech: Mechanism, shapes: dict[str, tuple[int, ...]], params: dict[str, Any], dtype_name: str,
            need_weights: bool, max_parameters: int | None = None) -> Estimate:
        key = (mech.slug, tuple(sorted((k, tuple(v)) for k, v in shapes.items())),
               tuple(sorted((k, repr(v)) for k, v in params.items())), dtype_name, need_weights)
        found = self._items.get(key)
        if found is not None and not (found.notes and max_parameters is None):
            self._items.move_to_end(key)
            return found
        est = estimate(mech, shapes, params, dtype_name, need_weights, max_parameters)
        self._items[key] = est
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return est
