"""A bounded pool that executes mechanisms off the event loop, with a queue limit and a time limit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

import torch

from .errors import ApiError
from .mechanisms.base import Mechanism

T = TypeVar("T")


class RunPool:
    """``workers`` threads run mechanisms; up to ``queue`` more runs may wait. Past that a run is refused
    with 503 at once, before any work. A run over ``timeout_s`` is answered with 504 (the thread finishes
    its current forward pass in the background and is counted until it does)."""

    def __init__(self, workers: int, queue: int, timeout_s: float):
        self.executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="atlas-run")
        self.capacity = max(1, workers) + max(0, queue)
        self.timeout_s = timeout_s
        self._inflight = 0
        self._lock = threading.Lock()

    @property
    def inflight(self) -> int:
        return self._inflight

    def release(self, _fut=None) -> None:
        with self._lock:
            self._inflight -= 1

    def reserve(self, n: int = 1) -> None:
        with self._lock:
            if self._inflight + n > self.capacity:
                raise ApiError(503, f"all {self.capacity} run slots are busy; retry shortly",
                               code="busy", headers={"Retry-After": "1"}, details={"capacity": self.capacity})
            self._inflight += n

    async def run(self, fn: Callable[[], T], reserved: bool = False) -> T:
        if not reserved:
            self.reserve()
        loop = asyncio.get_running_loop()
        try:
            fut = self.executor.submit(fn)
        except RuntimeError:
            self.release()
            raise ApiError(503, "the service is shutting down", code="unavailable") from None
        fut.add_done_callback(self.release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut, loop=loop), timeout=self.timeout_s)
        except TimeoutError:
            raise ApiError(504, f"the run took longer than the limit of {self.timeout_s:g} s; use smaller inputs",
                           code="timeout", details={"limit_s": self.timeout_s}) from None

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _freeze(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


@lru_cache(maxsize=512)
def _flops(mech: Mechanism, shapes: tuple, params: tuple, need_weights: bool) -> int | None:
    from torch.utils.flop_counter import FlopCounterMode

    from .mechanisms import runtime

    if mech.stochastic:
        return None  # sampling needs real numbers, which the meta device does not have
    try:
        with torch.device("meta"):
            module = mech.build(dict(shapes), dict(params))
            inputs = {name: torch.empty(shape) for name, shape in shapes}
        module.eval()
        with FlopCounterMode(display=False) as counter:
            runtime.forward(mech, module, inputs, need_weights=need_weights)
        return int(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - an op without a meta kernel: FLOPs are just not reported
        return None


def flops(mech: Mechanism, shapes: dict[str, tuple[int, ...]], params: dict[str, Any], need_weights: bool) -> int | None:
    """Floating-point operations of one forward pass, counted on the meta device (no real compute), cached."""
    return _flops(mech, tuple(sorted((k, tuple(v)) for k, v in shapes.items())), _freeze(params), need_weights)


class ModuleCache:
    """Built modules keyed by (technique, input shapes, hyper-parameters, seed, dtype, device): the same
    request builds its weights once. Modules run in eval/inference mode and hold no per-call state, so
    concurrent runs may share one. Runs with client weights never use the cache."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[tuple, torch.nn.Module] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        if self.size <= 0:
            return build()
        with self._lock:
            module = self._items.get(key)
            if module is not None:
                self._items.move_to_end(key)
                return module
        module = build()
        with self._lock:
            self._items[key] = module
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return module


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def ms(self) -> float:
        return round((time.perf_counter() - self.start) * 1000.0, 3)
