"""Run-API overhead, JSON throughput, and forward time against timm; prints a table of figures."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from safetensors.torch import save as st_save

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.mechanisms import registry, runtime  # noqa: E402

SHAPE = (8, 256, 28, 28)
API_CASES = [  # slug, hyper-parameters for the benchmark input
    ("squeeze-and-excitation", {}),
    ("cbam", {}),
    ("non-local", {}),
    ("vision-transformer", {"patch_size": 4}),
]


def median_time(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def paired(fa, fb, repeat: int, warmup: int = 2) -> tuple[float, float]:
    """Median times of ``fa`` and ``fb``, measured alternately so that drift in machine load hits both."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for i in range(repeat):
        for fn, acc in ((fa, ta), (fb, tb)) if i % 2 == 0 else ((fb, tb), (fa, ta)):
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "ATLAS_VAR_DIR": tmp, "ATLAS_PORT": str(port), "ATLAS_RUN_WORKERS": "1",
           "ATLAS_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--log-level", "warning"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def bench_api(base: str, repeat: int) -> list[dict]:
    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(0))
    body = st_save({"x": x})
    rows = []
    with httpx.Client(timeout=300) as client:
        for slug, params in API_CASES:
            mech = registry.get(slug)
            resolved = mech.validate({"x": SHAPE}, params)
            module = runtime.build_module(mech, {"x": SHAPE}, resolved, seed=0)
            url = f"{base}/techniques/{slug}/run"
            query = {"seed": 0, "return_attention": "false", "hyperparameters": json.dumps(params)}
            headers = {"Content-Type": "application/vnd.safetensors", "Accept": "application/vnd.safetensors"}

            def call(url=url, query=query, headers=headers):
                r = client.post(url, params=query, content=body, headers=headers)
                r.raise_for_status()
                return r

            local, remote = paired(lambda m=mech, mod=module: runtime.forward(m, mod, {"x": x}, need_weights=False),
                                   call, repeat)
            rows.append({"technique": slug, "in_process_ms": local * 1e3, "api_ms": remote * 1e3,
                         "ratio": remote / local})
    return rows


def bench_json(base: str, repeat: int) -> dict:
    shape = (2, 256, 28, 28)
    x = torch.randn(*shape)
    payload = json.dumps({"inputs": {"x": {"shape": list(shape), "data": x.flatten().tolist()}},
                          "return_attention": False}).encode()
    with httpx.Client(timeout=300) as client:
        sizes = {}

        def call():
            r = client.post(f"{base}/techniques/squeeze-and-excitation/run", content=payload,
                            headers={"Content-Type": "application/json"})
            r.raise_for_status()
            sizes["answer"] = len(r.content)

        t = median_time(call, max(3, repeat // 2), warmup=1)
    total_mb = (len(payload) + sizes["answer"]) / 1e6
    return {"request_mb": len(payload) / 1e6, "answer_mb": sizes["answer"] / 1e6, "median_s": t,
            "mb_per_s": total_mb / t, "tensor_mb_per_s": 2 * x.numel() * 4 / 1e6 / t}


def _timm():
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        return None
    sys.path.insert(0, str(REPO))
    from tests.mechanisms.conftest import _import_timm_layers

    return _import_timm_layers()


def bench_vs_timm(repeat: int) -> list[dict]:
    layers = _timm()
    if layers is None:
        return []
    from timm.layers.cbam import CbamModule

    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(1))
    c = SHAPE[1]
    rows = []

    def se_pair():
        ours = runtime.build_module(registry.get("squeeze-and-excitation"), {"x": SHAPE}, {"reduction": 16}, 0)
        theirs = layers.SEModule(c, rd_channels=c // 16).eval()
        sd = ours.state_dict()
        theirs.load_state_dict({"fc1.weight": sd["fc1.weight"][:, :, None, None], "fc1.bias": sd["fc1.bias"],
                                "fc2.weight": sd["fc2.weight"][:, :, None, None], "fc2.bias": sd["fc2.bias"]})
        return "squeeze-and-excitation", ours, theirs

    def eca_pair():
        mech = registry.get("efficient-channel-attention")
        ours = runtime.build_module(mech, {"x": SHAPE}, mech.defaults(), 0)
        k = next(v for v in ours.state_dict().values()).shape[-1]
        theirs = layers.EcaModule(c, kernel_size=k).eval()
        theirs.conv.weight.data.copy_(next(iter(ours.state_dict().values())).reshape_as(theirs.conv.weight))
        return "efficient-channel-attention", ours, theirs

    def cbam_pair():
        mech = registry.get("cbam")
        ours = runtime.build_module(mech, {"x": SHAPE}, {**mech.defaults(), "spatial_norm": True}, 0) \
            if "spatial_norm" in mech.defaults() else runtime.build_module(mech, {"x": SHAPE}, mech.defaults(), 0)
        theirs = CbamModule(c, rd_ratio=1 / 16, rd_divisor=1, spatial_kernel_size=7, mlp_bias=False).eval() \
            if "mlp_bias" in CbamModule.__init__.__code__.co_varnames else CbamModule(c).eval()
        try:
            theirs.load_state_dict(_map_cbam(ours.state_dict(), theirs.state_dict()))
        except Exception:  # noqa: BLE001 - layouts differ: time them with their own weights
            pass
        return "cbam", ours, theirs

    def nl_pair():
        mech = registry.get("non-local")
        ours = runtime.build_module(mech, {"x": SHAPE}, mech.defaults(), 0)
        theirs = layers.NonLocalAttn(c, use_scale=False, rd_ratio=1 / 2).eval()
        return "non-local", ours, theirs

    for make in (se_pair, eca_pair, cbam_pair, nl_pair):
        try:
            slug, ours, theirs = make()
        except Exception as exc:  # noqa: BLE001
            rows.append({"technique": make.__name__, "error": str(exc)[:80]})
            continue
        with torch.inference_mode():
            kwargs = {"need_weights": False} if runtime._takes_need_weights(type(ours)) else {}
            t_ours, t_theirs = paired(lambda o=ours, kw=kwargs: o(x, **kw), lambda t=theirs: t(x), repeat)
        rows.append({"technique": slug, "ours_ms": t_ours * 1e3, "timm_ms": t_theirs * 1e3, "ratio": t_ours / t_theirs})
    return rows


def _map_cbam(ours: dict, theirs: dict) -> dict:
    """Pair tensors by shape in order (both modules hold the same layers)."""
    out, pool = {}, list(ours.values())
    for name, t in theirs.items():
        match = next(i for i, v in enumerate(pool) if v.shape == t.shape)
        out[name] = pool.pop(match)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeat = 5 if args.quick else 25
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {list(SHAPE)} float32")
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_server(tmp)
        try:
            api = bench_api(base, repeat)
            js = bench_json(base, repeat)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print("\nPOST /run (safetensors in and out) vs the same module in-process   target ratio <= 1.3")
    print(f"{'technique':<28}{'in-process ms':>15}{'API ms':>10}{'ratio':>8}")
    for r in api:
        print(f"{r['technique']:<28}{r['in_process_ms']:>15.2f}{r['api_ms']:>10.2f}{r['ratio']:>8.2f}")
    print(f"\nJSON path (squeeze-and-excitation, [2, 256, 28, 28]): request {js['request_mb']:.1f} MB, answer "
          f"{js['answer_mb']:.1f} MB, median {js['median_s'] * 1e3:.0f} ms -> {js['mb_per_s']:.1f} MB/s of JSON, "
          f"{js['tensor_mb_per_s']:.1f} MB/s of float32 tensor data")
    timm_rows = bench_vs_timm(repeat)
    if timm_rows:
        print("\nforward time vs timm (same input, eval mode, inference)   target ratio <= 1.1")
        print(f"{'technique':<28}{'ours ms':>10}{'timm ms':>10}{'ratio':>8}")
        for r in timm_rows:
            if "error" in r:
                print(f"{r['technique']:<28}  not compared: {r['error']}")
            else:
                print(f"{r['technique']:<28}{r['ours_ms']:>10.2f}{r['timm_ms']:>10.2f}{r['ratio']:>8.2f}")


if __name__ == "__main__":
    main()
