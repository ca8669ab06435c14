"""The cost sweep: every planned curve of every mechanism, measured on one machine, as a profile.

Each point builds the module for its input shapes (seed 0, float32, eval mode), runs it warm and
reports the median forward latency, the peak memory the forward added (``measure``), the parameter
count and the FLOPs. A curve stops before the point whose latency or peak memory, extrapolated from
the last two points along their log-log slope, would pass the ceilings, and when its own time
budget is spent.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ..mechanisms import registry, runtime
from ..mechanisms.base import Mechanism
from . import bigo, fit, measure
from .plan import CurveSpec, Plan, TechniquePlan, expand, stated_expression, symbol_weights

FORMAT = 1


@dataclass
class Ceilings:
    latency_s: float = 1.0  # one forward call (CPU time on CPU)
    peak_bytes: int = 1 << 30  # peak memory of one forward
    curve_s: float = 15.0  # one curve, builds and repeats included (CPU time on CPU, so the points
    # measured do not depend on how busy the machine is)

    def as_dict(self) -> dict[str, float]:
        return {"latency_s": self.latency_s, "peak_bytes": self.peak_bytes, "curve_s": self.curve_s}


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": device.type, "cpu_model": cpu_model(), "logical_cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(terse=True),
        "gpu": None, "cuda": None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _predict(points: list[dict], key: str, next_x: int) -> float | None:
    """Extrapolate ``key`` to ``next_x`` along the log-log slope of the last two points."""
    pts = [(p["x"], time_of(p) if key == "fit_s" else p[key]) for p in points]
    pts = [(x, y) for x, y in pts if y]
    if len(pts) < 2:
        return None
    (x0, y0), (x1, y1) = pts[-2], pts[-1]
    if x1 <= x0:
        return None
    k = max(0.0, math.log(y1 / y0) / math.log(x1 / x0))
    return y1 * (next_x / x1) ** k


def _inputs(mech: Mechanism, shapes: dict[str, tuple[int, ...]], device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=gen)
        out[name] = t.to(device)
    return out


def measure_point(mech: Mechanism, shapes: dict[str, tuple[int, ...]], params: dict[str, Any],
                  device: torch.device, ceilings: Ceilings, attention: bool = True) -> dict[str, Any]:
    resolved = mech.validate(shapes, params)
    module = runtime.build_module(mech, shapes, resolved, seed=0, device=device)
    inputs = _inputs(mech, shapes, device)

    def call():
        return runtime.forward(mech, module, inputs, seed=0, need_weights=attention)

    first = call()  # also the output size
    out_elems = int(first["output"].numel())
    del first
    timing = measure.time_forward(call, device, min_total_s=min(0.2, ceilings.latency_s), warmup=1)
    if device.type == "cuda":
        peak = measure.peak_cuda_bytes(call, device)
    else:
        peak = measure.peak_rss_delta(call)

    def on(dev: torch.device):
        with torch.device(dev):
            m = mech.build(shapes, resolved).eval()
            x = {k: torch.empty(s) for k, s in shapes.items()}
        return runtime.forward(mech, m, x, seed=0, need_weights=attention)

    flops = None if mech.stochastic else measure.count_flops(on)
    return {"latency_s": timing.median_s, "cpu_s": timing.cpu_median_s if device.type == "cpu" else None,
            "repeats": timing.repeats, "spread": round(timing.spread, 3),
            "peak_bytes": peak, "flops": flops, "parameters": sum(p.numel() for p in module.parameters()),
            "output_elements": out_elems}


def sweep_curve(mech: Mechanism, tp: TechniquePlan, spec: CurveSpec, device: torch.device,
                ceilings: Ceilings, log: Callable[[str], None]) -> dict[str, Any]:
    points: list[dict[str, Any]] = []
    stopped = "all sizes measured"
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    started = clock()
    for pt in spec.points:
        if clock() - started > ceilings.curve_s:
            stopped = f"curve time budget of {ceilings.curve_s:g} s spent before x={pt.x}"
            break
        reason = None
        for key, limit, what in (("latency_s", ceilings.latency_s, "latency"),
                                 ("peak_bytes", ceilings.peak_bytes, "peak memory")):
            guess = _predict(points, "fit_s" if key == "latency_s" else key, pt.x)
            if guess is not None and guess > limit:
                reason = f"{what} at x={pt.x} predicted {guess:.3g} > ceiling {limit:g}"
                break
        if reason:
            stopped = reason
            break
        input_bytes = 4 * sum(math.prod(s) for s in pt.shapes.values())
        if input_bytes > ceilings.peak_bytes:
            stopped = f"inputs at x={pt.x} take {input_bytes} bytes > ceiling"
            break
        try:
            m = measure_point(mech, pt.shapes, tp.hyperparameters, device, ceilings, tp.attention_outputs)
        except Exception as exc:  # noqa: BLE001 - recorded with the curve; the sweep goes on
            stopped = f"x={pt.x}: {type(exc).__name__}: {str(exc)[:200]}"
            break
        points.append({"x": pt.x, "shapes": {k: list(v) for k, v in pt.shapes.items()}, **m})
        cpu = f"{m['cpu_s'] * 1e3:9.3f} ms CPU" if m.get("cpu_s") is not None else ""
        log(f"  {spec.axis:9} x={pt.x:<8} {m['latency_s'] * 1e3:9.3f} ms {cpu} {m['peak_bytes'] / 2**20:9.2f} MiB")
        if time_of(m) > ceilings.latency_s or m["peak_bytes"] > ceilings.peak_bytes:
            stopped = f"ceiling reached at x={pt.x}"
            break
    return {"axis": spec.axis, "x": spec.x_label, "points": points, "stopped": stopped,
            "weights": {k: round(v, 4) for k, v in symbol_weights(tp, spec).items()}}


def time_of(point: dict[str, Any]) -> float:
    """The time the fit reads: CPU time where measured (steady on a shared machine), else wall time."""
    return point.get("cpu_s") or point["latency_s"]


def memory_bytes(point: dict[str, Any]) -> int:
    """Memory to run the forward: the weights (float32) plus the peak the forward itself adds."""
    return point["peak_bytes"] + 4 * point["parameters"]


def judge_curve(curve: dict[str, Any], tp: TechniquePlan, complexity: dict[str, str], plan: Plan) -> dict:
    """Fitted exponents of a measured curve and the verdict against the stated complexity."""
    pts = curve["points"]
    xs = [p["x"] for p in pts]
    weights = curve["weights"]
    escapes = tp.constants_dominate.get(curve["axis"], {})  # type: ignore[call-overload]
    fits: dict[str, Any] = {}
    time_expr = stated_expression(complexity, tp, "time")
    g = bigo.growth(time_expr, weights)
    e, n = fit.exponent(xs, [time_of(p) for p in pts])
    fits["time"] = fit.judge(e, n, time_expr, g.exponent, g.lowest, plan.tolerance, escapes.get("time")).as_dict()
    mem_expr = stated_expression(complexity, tp, "memory")
    gm = bigo.growth(mem_expr, weights)
    out_e, _ = fit.exponent(xs, [p["output_elements"] for p in pts])
    out_e = round(out_e, 3) if out_e is not None else 0.0
    e, n = fit.exponent(xs, [m if (m := memory_bytes(p)) >= plan.memory_floor_bytes else None for p in pts],
                        min_points=3)
    fits["memory"] = fit.judge(e, n, f"{mem_expr} (+ output)", max(gm.exponent, out_e), min(gm.lowest, out_e),
                               plan.tolerance, escapes.get("memory")).as_dict()
    e, n = fit.exponent(xs, [p["flops"] for p in pts])
    fits["flops"] = {"exponent": round(e, 3) if e is not None else None, "points": n}
    return fits


def run_sweep(plan: Plan, complexities: dict[str, dict[str, str]], *, profile: str, device: torch.device,
              ceilings: Ceilings, slugs: Iterable[str] | None = None, axes: Iterable[str] | None = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict[str, Any]:
    malloc = False
    if device.type == "cpu":
        malloc = measure.configure_malloc()
        if not measure.rss_peak_supported():
            raise RuntimeError("peak memory needs /proc/self/clear_refs and VmHWM (Linux)")
    mechs = registry.all_mechanisms()
    wanted = list(slugs) if slugs else sorted(plan.techniques)
    unknown = [s for s in wanted if s not in plan.techniques or s not in mechs]
    if unknown:
        raise ValueError(f"no plan or no mechanism for {unknown}")
    conditions = {"started": _now(), "loadavg_before": _loadavg()}
    t0 = time.perf_counter()
    techniques: dict[str, Any] = {}
    for slug in wanted:
        mech, tp = mechs[slug], plan.techniques[slug]
        log(slug)
        curves = []
        for axis in tp.curves:
            if axes and axis not in axes:
                continue
            curve = sweep_curve(mech, tp, expand(mech, tp, axis), device, ceilings, log)
            curve["fits"] = judge_curve(curve, tp, complexities.get(slug, {}), plan)
            log(f"  -> {curve['stopped']}; time^{curve['fits']['time']['exponent']} "
                f"({curve['fits']['time']['verdict']}), memory^{curve['fits']['memory']['exponent']} "
                f"({curve['fits']['memory']['verdict']})")
            curves.append(curve)
        techniques[slug] = {"hyperparameters": mech.resolve_params(tp.hyperparameters),
                            "attention_outputs": tp.attention_outputs, "curves": curves}
    conditions.update(finished=_now(), loadavg_after=_loadavg(), wall_s=round(time.perf_counter() - t0, 1))
    if device.type == "cpu":
        memory_method = ("weights (float32) plus the peak resident-set growth during one forward "
                         "(/proc/self/clear_refs, then VmHWM), heap trimmed before")
        if malloc:
            memory_method += "; glibc allocates from its heap only and keeps freed memory between calls"
    else:
        memory_method = "weights (float32) plus torch.cuda.max_memory_allocated above the allocation before the forward"
    return {
        "format": FORMAT, "profile": profile, "machine": machine(device), "conditions": conditions,
        "method": {
            "dtype": "float32", "seed": 0,
            "attention_outputs": "formed as the API returns them, unless a technique's entry says false",
            "latency": "median wall time of warm forward calls (2 warm-up calls; at least 5 and 0.2 s of repeats, "
                       "3 when calls are slow)",
            "cpu": "median CPU time of the process over the same calls (CPU only); the time fit reads it",
            "memory": memory_method,
            "flops": "torch.utils.flop_counter on the meta device (matrix products and convolutions)",
            "fit": "least-squares slope of log y on log x over the upper half of each curve",
            "tolerance": plan.tolerance, "memory_floor_bytes": plan.memory_floor_bytes,
            "ceilings": ceilings.as_dict(),
        },
        "techniques": techniques,
    }
