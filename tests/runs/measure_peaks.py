"""Measures each mechanism's forward-pass peak memory from the kernel's own accounting (the process's
peak resident set, VmHWM, reset through /proc/self/clear_refs) and prints it next to the run budget's
estimate, one JSON line per case. Run in a fresh process with glibc's mmap threshold fixed low, so
that freed memory goes back to the system and the peak follows live allocations."""

from __future__ import annotations

import ctypes
import gc
import json
import sys

import torch

from service.mechanisms import registry, runtime
from service.runs import budget

TARGET = int(sys.argv[1]) if len(sys.argv) > 1 else 32 << 20
ONLY = set(sys.argv[2:])
libc = ctypes.CDLL("libc.so.6")
torch.set_num_threads(1)


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _scaled(mech, shapes, params):
    """Grow the batch dimension until the traced peak reaches TARGET (or the shapes stop validating)."""
    best = shapes
    for k in range(14):
        s = {n: (v[0] * 2**k, *v[1:]) for n, v in shapes.items()}
        try:
            mech.validate(s, params)
        except Exception:  # noqa: BLE001 - a batch the mechanism cannot take ends the growth
            return best
        best = s
        if budget.estimate(mech, s, params, "float32", True).activation_peak_bytes >= TARGET:
            return s
    return best


def main() -> None:
    for slug, mech in registry.all_mechanisms().items():
        if ONLY and slug not in ONLY:
            continue
        params = mech.defaults()
        shapes = _scaled(mech, dict(mech.example_shapes), params)
        module = runtime.build_module(mech, shapes, params, 0)
        g = torch.Generator().manual_seed(1)
        inputs = {k: torch.randn(v, generator=g) for k, v in shapes.items()}
        for need in (True, False):
            est = budget.estimate(mech, shapes, params, "float32", need)
            runtime.forward(mech, module, inputs, 0, need_weights=need)  # lazy initialisation out of the way
            gc.collect()
            libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            base = _status("VmRSS:")
            out = runtime.forward(mech, module, inputs, 0, need_weights=need)
            peak = _status("VmHWM:") - base
            del out
            print(json.dumps({"slug": slug, "need_weights": need, "shapes": {k: list(v) for k, v in shapes.items()},
                              "traced": est.activation_peak_bytes, "measured": peak}), flush=True)


if __name__ == "__main__":
    main()
