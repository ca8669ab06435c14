"""Run-API overhead, JSON throughput, and forward time against timm; prints a table of figures."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx
import torch
from safetensors.torch import save as st_save

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _support import free_port, median_time  # noqa: E402

from service.mechanisms import registry, runtime  # noqa: E402

SHAPE = (8, 256, 28, 28)
API_CASES = [  # slug, hyper-parameters for the benchmark input
    ("squeeze-and-excitation", {}),
    ("cbam", {}),
    ("non-local", {}),
    ("vision-transformer", {"patch_size": 4}),
]


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


def start_server(tmp: str, extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, float]:
    """The service as deployed (``attention-atlas serve``) with one run worker; also returns the seconds
    from launch to the first answered /healthz."""
    port = free_port()
    env = {**os.environ, "ATLAS_VAR_DIR": tmp, "ATLAS_PORT": str(port), "ATLAS_RUN_WORKERS": "1",
           "ATLAS_LOG_LEVEL": "warning", **(extra or {})}
    launched = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--log-level", "warning"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    healthy = None
    for _ in range(3000):
        try:
            if healthy is None and httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                healthy = time.perf_counter() - launched
            if healthy is not None:
                ready = httpx.get(f"{base}/readyz", timeout=1)
                pool = ready.json().get("run_workers", {}) if ready.status_code == 200 else {}
                # measure only once every worker, the spare included, has warmed up
                if pool and pool["starting"] == 0 and pool["idle"] + pool["spares"] > pool["workers"] - 1:
                    return proc, base, healthy
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    proc.kill()
    raise SystemExit("server did not start")


def _echo_server(port_queue) -> None:
    """Reads a length-prefixed request and writes back the number of bytes the client asks for."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port_queue.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(64 << 20)
    view = memoryview(buf)
    while True:
        head = conn.recv(16, socket.MSG_WAITALL)
        if len(head) < 16:
            return
        n_in, n_out = struct.unpack("<QQ", head)
        got = 0
        while got < n_in:
            got += conn.recv_into(view[:min(n_in - got, len(buf))])
        conn.sendall(view[:n_out])


def socket_floor(n_in: int, n_out: int, repeat: int) -> float:
    """Median time to move the request's bytes to another process over loopback and the answer's back."""
    import multiprocessing

    q = multiprocessing.get_context("spawn").Queue()
    proc = multiprocessing.get_context("spawn").Process(target=_echo_server, args=(q,), daemon=True)
    proc.start()
    port = q.get(timeout=30)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = bytes(n_in)
    recv = bytearray(n_out)
    view = memoryview(recv)

    def once():
        sock.sendall(struct.pack("<QQ", n_in, n_out) + payload)
        got = 0
        while got < n_out:
            got += sock.recv_into(view[got:])

    t = median_time(once, repeat)
    sock.close()
    proc.join(timeout=5)
    return t


_ECHO_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
async def echo(request):
    body = await request.body()
    return Response(body, media_type="application/octet-stream")
uvicorn.run(Starlette(routes=[Route("/echo", echo, methods=["POST"])]), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="warning")
"""


def uvicorn_echo(body: bytes, repeat: int) -> float:
    """Median time of a bare Starlette echo of ``body`` on uvicorn: the HTTP server's own floor."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _ECHO_APP, str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        client = RawClient(f"http://127.0.0.1:{port}")
        return median_time(lambda: client.post("/echo", body, {"Content-Type": "application/octet-stream"}), repeat)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class RawClient:
    """A keep-alive HTTP/1.1 client on http.client: the request body goes out in one write and the answer
    is read into one buffer, so the client adds as little as possible to what the server costs."""

    def __init__(self, base: str):
        import http.client

        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=300)
        self.conn.connect()
        # http.client writes the headers and a large body in two sends: without TCP_NODELAY, Nagle's
        # algorithm holds the body until the server's delayed ACK of the headers (~40 ms on Linux)
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        self.conn.request("POST", path, body=body, headers={**headers, "Content-Length": str(len(body))})
        r = self.conn.getresponse()
        data = r.read()
        if r.status not in (200, 201):
            raise RuntimeError(f"{r.status}: {data[:300]!r}")
        return data


def bench_api(base: str, repeat: int) -> list[dict]:
    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(0))
    body = st_save({"x": x})
    rows = []
    client = RawClient(base)
    for slug, params in API_CASES:
        mech = registry.get(slug)
        resolved = mech.validate({"x": SHAPE}, params)
        module = runtime.build_module(mech, {"x": SHAPE}, resolved, seed=0)
        path = (f"/techniques/{slug}/run?seed=0&return_attention=false&hyperparameters="
                + urllib.parse.quote(json.dumps(params)))
        headers = {"Content-Type": "application/vnd.safetensors", "Accept": "application/vnd.safetensors"}
        answer = client.post(path, body, headers)
        floor = socket_floor(len(body), len(answer), repeat)
        echo = uvicorn_echo(body, repeat)
        local, remote = paired(lambda m=mech, mod=module: runtime.forward(m, mod, {"x": x}, need_weights=False),
                               lambda p=path, h=headers: client.post(p, body, h), repeat)
        rows.append({"technique": slug, "in_process_ms": local * 1e3, "socket_ms": floor * 1e3, "echo_ms": echo * 1e3,
                     "api_ms": remote * 1e3, "ratio": remote / (floor + local), "vs_forward": remote / local})
    return rows


def bench_shm(base: str, repeat: int) -> dict:
    """The co-located path: inputs and outputs in registered shared-memory regions."""
    from service.runs.shm import default_dir

    slug = "squeeze-and-excitation"
    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(0))
    directory = default_dir()
    tag = os.getpid()
    inp, out = directory / f"bench-in-{tag}", directory / f"bench-out-{tag}"
    inp.write_bytes(x.numpy().tobytes())
    out.write_bytes(bytes(2 * x.numel() * 4))
    client = RawClient(base)
    try:
        for name, path in (("in", inp), ("out", out)):
            client.post("/shm/regions", json.dumps({"name": name, "key": "/" + path.name,
                                                    "byte_size": path.stat().st_size}).encode(),
                        {"Content-Type": "application/json"})
        req = json.dumps({"inputs": {"x": {"region": "in", "shape": list(SHAPE)}}, "output_region": "out",
                          "return_attention": False}).encode()
        mech = registry.get(slug)
        module = runtime.build_module(mech, {"x": SHAPE}, mech.defaults(), seed=0)
        local, remote = paired(lambda: runtime.forward(mech, module, {"x": x}, need_weights=False),
                               lambda: client.post(f"/techniques/{slug}/run/shm", req,
                                                   {"Content-Type": "application/json"}), repeat)
    finally:
        inp.unlink()
        out.unlink()
    return {"technique": slug, "in_process_ms": local * 1e3, "api_ms": remote * 1e3, "ratio": remote / local}


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
            with open(f"/proc/{p}/task/{p}/children") as fh:
                stack.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            continue
    return total


def bench_hostile(base: str, pid: int) -> list[dict]:
    """The two requests that used to cost gigabytes: refusal time and the server tree's RSS around them."""
    import numpy as np
    from safetensors.numpy import save as np_save

    cases = [
        ("vision-transformer, 1x1x1x1 input, embed_dim 4096, mlp_ratio 16 (JSON, ~180 bytes)",
         "/techniques/vision-transformer/run", "application/json",
         json.dumps({"inputs": {"x": {"shape": [1, 1, 1, 1], "data": [1.0]}},
                     "hyperparameters": {"patch_size": 1, "embed_dim": 4096, "mlp_ratio": 16, "heads": 8}}).encode()),
        ("non-local, [1, 8, 128, 128] float32 (safetensors, 512 KiB), return_attention=false",
         "/techniques/non-local/run?return_attention=false", "application/vnd.safetensors",
         np_save({"x": np.zeros((1, 8, 128, 128), dtype=np.float32)})),
    ]
    rows = []
    with httpx.Client(timeout=300) as client:
        for label, path, ctype, body in cases:
            before = _tree_rss(pid)
            t = time.perf_counter()
            r = client.post(f"{base}{path}", content=body, headers={"Content-Type": ctype})
            elapsed = time.perf_counter() - t
            time.sleep(0.5)
            rows.append({"request": label, "status": r.status_code, "seconds": elapsed,
                         "rss_delta_mb": (_tree_rss(pid) - before) / 2**20})
    return rows


def bench_first_runs(base: str) -> list[dict]:
    """First run of each mechanism's example on a warm worker (FLOPs and the budget are traced then)."""
    rows = []
    with httpx.Client(timeout=300) as client:
        for slug in sorted(registry.all_mechanisms()):
            spec = client.get(f"{base}/techniques/{slug}/implementation").json()
            t = time.perf_counter()
            r = client.post(f"{base}/techniques/{slug}/run", json=spec["example_request"]["json"])
            rows.append({"technique": slug, "status": r.status_code, "seconds": time.perf_counter() - t})
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
            kwargs = {"need_weights": False} if runtime.takes_need_weights(type(ours)) else {}
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
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {list(SHAPE)} float32, "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        proc, base, first_start = start_server(tmp)  # empty database: migrate and load the catalogue
        proc.terminate()
        proc.wait(timeout=60)
        proc, base, healthy = start_server(tmp, {"ATLAS_RUN_SHM_CLIENT_REGIONS": "true"})
        try:
            api = bench_api(base, repeat)
            shared = bench_shm(base, repeat)
            js = bench_json(base, repeat)
            hostile = bench_hostile(base, proc.pid)
            first = bench_first_runs(base)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"\nstart-up: first /healthz answered {healthy:.2f} s after launch (database present; "
          f"{first_start:.2f} s on an empty database, which is migrated and loaded first)   target < 1 s")
    print("\nPOST /techniques/{slug}/run, safetensors in and out, output only; floor = raw loopback socket moving the "
          "same bytes to another process and back\nratio = API / (floor + in-process forward)   target <= 1.3")
    print("uvicorn echo = a bare Starlette app on uvicorn echoing the request body (the HTTP server's own cost)")
    print(f"{'technique':<26}{'forward ms':>11}{'socket ms':>10}{'echo ms':>9}{'API ms':>9}{'ratio':>7}"
          f"{'vs echo+fwd':>12}{'API/fwd':>9}")
    for r in api:
        print(f"{r['technique']:<26}{r['in_process_ms']:>11.2f}{r['socket_ms']:>10.2f}{r['echo_ms']:>9.2f}"
              f"{r['api_ms']:>9.2f}{r['ratio']:>7.2f}{r['api_ms'] / (r['echo_ms'] + r['in_process_ms']):>12.2f}"
              f"{r['vs_forward']:>9.2f}")
    print(f"\nshared-memory path ({shared['technique']}): forward {shared['in_process_ms']:.2f} ms, API "
          f"{shared['api_ms']:.2f} ms, ratio {shared['ratio']:.2f}   target <= 1.3")
    print("\nhostile requests: refused before allocation   targets: < 0.5 s, server tree RSS unchanged within 100 MB")
    for r in hostile:
        print(f"  {r['status']}  {r['seconds']:.3f} s  RSS {r['rss_delta_mb']:+.1f} MB  {r['request']}")
    slow = sorted(first, key=lambda r: -r["seconds"])[:5]
    print(f"\nfirst run of each example on a warm worker: median {statistics.median(r['seconds'] for r in first):.3f} s, "
          f"slowest " + ", ".join(f"{r['technique']} {r['seconds']:.2f} s" for r in slow) + "   target < 0.5 s")
    bad = [r for r in first if r["status"] != 200]
    if bad:
        print(f"  not 200: {bad}")
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
