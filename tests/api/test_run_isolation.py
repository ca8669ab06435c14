"""Run isolation: worker processes killed on timeout and replaced, crashes isolated, the cost budget
refusing before allocation, slots only for requests that have arrived, and the shared-memory path."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.numpy import load as st_load_np
from safetensors.numpy import save as st_save_np

from service.main import create_app
from service.mechanisms import registry, runtime
from service.runs import shm
from tests.conftest import make_settings
from tests.ops.test_operations import start_server

SE = "squeeze-and-excitation"
ST = {"Content-Type": "application/vnd.safetensors"}
SMALL = {"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.5] * 32}}, "hyperparameters": {"reduction": 2}}
# expectation-maximisation attention with 50 iterations on this input runs for seconds on one core
# and needs about 180 MB: slow, but well inside the memory budget
SLOW_X = np.random.default_rng(0).standard_normal((8, 256, 64, 64)).astype(np.float32)
SLOW_URL = ('/techniques/expectation-maximization-attention/run?hyperparameters={"iterations":50}'
            '&return_attention=false&timeout_s=0.5')


def _error(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json()["error"]


@pytest.fixture(scope="module")
def iso_client(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("iso"), run_workers=1, run_spare_workers=1, run_queue=2,
                             run_timeout_s=120.0, run_shm_client_regions=True, run_prestart=True)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        for _ in range(3):  # the first runs of a worker pay one-time costs
            if c.post(f"/techniques/{SE}/run", json=SMALL).status_code == 200:
                break
        yield c


def test_the_http_process_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys; from service.main import create_app; create_app(); "
            "import service.api.run, service.runs.core; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


def test_timed_out_run_is_killed_and_its_slot_is_free_at_once(iso_client):
    pool = iso_client.app.state.runs.pool
    before = pool.snapshot()
    err = _error(iso_client.post(SLOW_URL, content=st_save_np({"x": SLOW_X}), headers=ST), 504)
    assert err["code"] == "timeout" and err["details"]["limit_s"] == 0.5
    after = pool.snapshot()
    assert after["killed_on_timeout"] == before["killed_on_timeout"] + 1
    killed = set(before["pids"]) - set(after["pids"])
    assert len(killed) == 1
    # the spare took the slot: the next run does not wait for a new worker to start
    r = iso_client.post(f"/techniques/{SE}/run", json=SMALL)
    assert r.status_code == 200
    assert pool.snapshot()["busy"] == 0
    (pid,) = killed
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the killed worker is gone, not left running its forward pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"worker {pid} still runs after its run timed out")


def test_a_crashed_worker_fails_only_its_run(tmp_path):
    settings = make_settings(tmp_path, run_workers=1, run_spare_workers=1, run_timeout_s=120.0, run_prestart=True)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert c.post(f"/techniques/{SE}/run", json=SMALL).status_code == 200
        pool = c.app.state.runs.pool

        def kill_busy_worker():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                pids = pool.busy_pids()
                if pids:
                    time.sleep(0.2)
                    os.kill(pids[0], signal.SIGKILL)  # as the OOM killer would
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_busy_worker)
        killer.start()
        slow = SLOW_URL.replace("timeout_s=0.5", "timeout_s=100")
        err = _error(c.post(slow, content=st_save_np({"x": SLOW_X}), headers=ST), 502)
        killer.join()
        assert err["code"] == "worker_died"
        assert pool.snapshot()["died"] == 1
        r = c.post(f"/techniques/{SE}/run", json=SMALL)
        assert r.status_code == 200, r.text


def test_hostile_hyperparameters_are_refused_before_anything_is_built(iso_client):
    body = {"inputs": {"x": {"shape": [1, 1, 1, 1], "data": [1.0]}},
            "hyperparameters": {"patch_size": 1, "embed_dim": 4096, "mlp_ratio": 16, "heads": 8}}
    err = _error(iso_client.post("/techniques/vision-transformer/run", json=body), 422)
    assert err["code"] == "over_budget"
    assert err["details"]["parameters"] > err["details"]["limit"]
    assert err["details"]["setting"] == "ATLAS_RUN_MAX_PARAMETERS"
    # the count is the module's own: build the same (small) configuration and compare
    mech = registry.get("vision-transformer")
    small = {"patch_size": 1, "embed_dim": 64, "mlp_ratio": 4, "heads": 8}
    body["hyperparameters"] = small
    ok = iso_client.post("/techniques/vision-transformer/run", json=body)
    assert ok.status_code == 200, ok.text
    params = mech.validate({"x": (1, 1, 1, 1)}, small)
    built = runtime.build_module(mech, {"x": (1, 1, 1, 1)}, params, 0)
    assert ok.json()["parameter_count"] == sum(p.numel() for p in built.parameters())


def test_a_small_body_that_needs_gigabytes_gets_413(iso_client):
    x = np.zeros((1, 8, 128, 128), dtype=np.float32)  # 512 KiB; the attention map alone is 1 GiB
    err = _error(iso_client.post("/techniques/non-local/run?return_attention=false", content=st_save_np({"x": x}),
                                 headers=ST), 413)
    assert err["code"] == "over_budget"
    d = err["details"]
    assert d["budgeted_bytes"] > d["limit_bytes"] and d["setting"] == "ATLAS_RUN_MAX_BYTES"
    assert d["activation_peak_bytes"] >= 128 * 128 * 128 * 128 * 4  # at least one N x N float32 map
    assert iso_client.app.state.runs.pool.snapshot()["busy"] == 0


def test_batch_is_priced_before_anything_runs(iso_client):
    inputs = {"x": {"shape": [1, 8, 128, 128], "data": [0.0] * (8 * 128 * 128)}}
    err = _error(iso_client.post("/run", json={"techniques": [SE, "non-local"], "inputs": inputs,
                                               "hyperparameters": {SE: {"reduction": 2}}}), 413)
    assert "non-local" in err["message"]


def _raw_request(port: int, path: str, headers: dict[str, str], body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(head.encode() + b"\r\n" + body)
    return sock


def test_stalled_uploads_hold_no_slot_and_get_408(tmp_path):
    env = {"ATLAS_RUN_WORKERS": "1", "ATLAS_RUN_QUEUE": "0", "ATLAS_RUN_BODY_IDLE_TIMEOUT_S": "1.5",
           "ATLAS_RUN_BODY_TIMEOUT_S": "3"}
    proc, base = start_server(env, tmp_path)
    port = int(base.rsplit(":", 1)[1])
    try:
        stalled = [_raw_request(port, f"/techniques/{SE}/run", {"Content-Type": "application/json",
                                                                "Content-Length": "1000"}, b'{"inputs":')
                   for _ in range(6)]
        # one worker, no queue: a held slot would make this a 503
        r = httpx.post(f"{base}/techniques/{SE}/run", json=SMALL, timeout=60)
        assert r.status_code == 200, r.text
        for sock in stalled:
            sock.settimeout(10)
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
            sock.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_shared_memory_round_trip(iso_client):
    svc = iso_client.app.state.runs
    directory = svc.segments.directory
    tag = uuid.uuid4().hex[:8]
    x = np.random.default_rng(3).standard_normal((2, 16, 5, 5)).astype(np.float32)
    inp, out = directory / f"client-in-{tag}", directory / f"client-out-{tag}"
    inp.write_bytes(x.tobytes())
    out.write_bytes(bytes(1 << 16))
    try:
        assert iso_client.post("/shm/regions", json={"name": "in", "key": f"/client-in-{tag}",
                                                     "byte_size": x.nbytes}).status_code == 201
        assert iso_client.post("/shm/regions", json={"name": "out", "key": f"/client-out-{tag}",
                                                     "byte_size": 1 << 16}).status_code == 201
        r = iso_client.post(f"/techniques/{SE}/run/shm", json={
            "inputs": {"x": {"region": "in", "shape": list(x.shape)}}, "output_region": "out",
            "hyperparameters": {"reduction": 4}, "seed": 5})
        assert r.status_code == 200, r.text
        refs = {o["name"]: o for o in r.json()["outputs"]}
        raw = out.read_bytes()
        got = np.frombuffer(raw, dtype=np.float32, count=x.size, offset=refs["output"]["offset"]).reshape(x.shape)
        want = runtime.run(registry.get(SE), {"x": torch.from_numpy(x)}, {"reduction": 4}, seed=5)["output"]
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-6)
        # the client replaces its object under the same name: the worker reads the new one, not a stale mapping
        x2 = -x
        inp.unlink()
        inp.write_bytes(x2.tobytes())
        r = iso_client.post(f"/techniques/{SE}/run/shm", json={
            "inputs": {"x": {"region": "in", "shape": list(x.shape)}}, "output_region": "out",
            "hyperparameters": {"reduction": 4}, "seed": 5})
        assert r.status_code == 200, r.text
        got = np.frombuffer(out.read_bytes(), dtype=np.float32, count=x.size,
                            offset=refs["output"]["offset"]).reshape(x.shape)
        want = runtime.run(registry.get(SE), {"x": torch.from_numpy(x2)}, {"reduction": 4}, seed=5)["output"]
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-6)
        # regions that do not exist, escape the directory or are too small are refused
        for key in ("/../etc/passwd", "/no-such-region", f"/atlas-{tag}"):
            e = iso_client.post("/shm/regions", json={"name": "bad", "key": key, "byte_size": 4})
            assert e.status_code == 400, e.text
        small = iso_client.post("/shm/regions", json={"name": "tiny", "key": f"/client-in-{tag}", "byte_size": 16})
        assert small.status_code == 201
        e = iso_client.post(f"/techniques/{SE}/run/shm", json={
            "inputs": {"x": {"region": "in", "shape": list(x.shape)}}, "output_region": "tiny",
            "hyperparameters": {"reduction": 4}})
        assert _error(e, 413)["details"]["needed_bytes"] > 16
    finally:
        for name in ("in", "out", "tiny"):
            iso_client.delete(f"/shm/regions/{name}")
        inp.unlink()
        out.unlink()


def test_shared_memory_regions_are_off_by_default(tmp_path):
    with TestClient(create_app(make_settings(tmp_path)), raise_server_exceptions=False) as c:
        assert _error(c.post("/shm/regions", json={"name": "a", "key": "/a", "byte_size": 4}), 403)["code"] == "forbidden"


def test_binary_round_trip_through_shared_segments_matches_in_process(iso_client):
    x = np.random.default_rng(1).standard_normal((2, 32, 7, 7)).astype(np.float32)
    r = iso_client.post(f"/techniques/{SE}/run?seed=3&hyperparameters=%7B%22reduction%22%3A4%7D", content=st_save_np({"x": x}),
                        headers={**ST, "Accept": "application/vnd.safetensors"})
    assert r.status_code == 200, r.text
    assert int(r.headers["content-length"]) == len(r.content)
    got = st_load_np(r.content)
    want = runtime.run(registry.get(SE), {"x": torch.from_numpy(x)}, {"reduction": 4}, seed=3)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k].numpy(), rtol=1e-6, atol=1e-6)


def test_region_names_stay_inside_the_directory():
    for bad in ("../x", "/a/b", "", ".hidden", "a" * 200, "x\x00y"):
        with pytest.raises(ValueError):
            shm.check_region_name(bad)
    assert shm.check_region_name("/triton_input_0") == "triton_input_0"


def test_shared_memory_in_flight_is_bounded(tmp_path):
    """Bodies in flight hold at most ATLAS_RUN_SHM_MAX_BYTES of shared memory (a full tmpfs would make a write
    through the mapping fatal): past it, 503 before anything is read or run."""
    settings = make_settings(tmp_path, run_shm_max_bytes=1 << 20)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        big = np.zeros((1, 8, 256, 128), dtype=np.float32)  # 1 MiB of data plus the header
        err = _error(c.post(f"/techniques/{SE}/run", content=st_save_np({"x": big}), headers=ST), 503)
        assert err["code"] == "busy" and err["details"]["setting"] == "ATLAS_RUN_SHM_MAX_BYTES"
        assert c.app.state.runs.segments.in_use == 0
        assert c.post(f"/techniques/{SE}/run", json=SMALL).status_code == 200
        assert c.app.state.runs.segments.in_use == 0


def test_segment_pool_reserves_real_pages(tmp_path):
    pool = shm.SegmentPool(tmp_path, keep_bytes=1 << 20, max_in_use=4 << 20)
    seg = pool.take(100_000)
    assert os.stat(seg.path).st_blocks * 512 >= seg.size  # allocated now, not on first write
    with pytest.raises(shm.NoSpace):
        pool.take(4 << 20)
    pool.give(seg)
    assert pool.in_use == 0
    again = pool.take(50_000)
    assert again is seg  # reused, no fresh pages
    pool.give(again)
    pool.close()


def test_an_absurd_content_length_is_a_413_not_a_server_error(iso_client):
    for path, ctype in ((f"/techniques/{SE}/run", "application/vnd.safetensors"),
                        (f"/v2/models/{SE}/infer", "application/json")):
        r = iso_client.post(path, content=b"x", headers={"Content-Type": ctype, "Content-Length": "9" * 5000})
        assert r.status_code == 413, r.text
