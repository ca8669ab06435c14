"""The run API through the real app: every wire format, user weights, options and every error path."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from service.main import create_app
from service.mechanisms import registry, runtime
from tests.conftest import make_settings

SE = "squeeze-and-excitation"


def _jt(t: torch.Tensor) -> dict:
    return {"shape": list(t.shape), "dtype": "float32", "data": t.flatten().tolist()}


def _numpy_se(x, w):
    z = x.mean(axis=(2, 3))
    h = np.maximum(z @ w["fc1.weight"].T + w["fc1.bias"], 0)
    s = 1 / (1 + np.exp(-(h @ w["fc2.weight"].T + w["fc2.bias"])))
    return x * s[:, :, None, None], s


@pytest.fixture(scope="module")
def run_client(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("run"), max_json_body_bytes=2_000_000, max_body_bytes=3_000_000,
                             max_tensor_elements=200_000, max_total_elements=300_000, run_workers=1, run_queue=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _err(resp, status, *needles):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    text = err["message"] + json.dumps(err["details"])
    for n in needles:
        assert n in text, (n, text)
    return err


def test_json_run_with_seed_matches_in_process_run(run_client):
    x = torch.randn(2, 32, 5, 4)
    r = run_client.post(f"/techniques/{SE}/run", json={"inputs": {"x": _jt(x)}, "hyperparameters": {"reduction": 4},
                                                       "seed": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    want = runtime.run(registry.get(SE), {"x": x}, {"reduction": 4}, seed=3)
    got = torch.tensor(body["outputs"]["output"]["data"])
    torch.testing.assert_close(got, want["output"], rtol=1e-6, atol=1e-6)
    assert body["outputs"]["output"]["shape"] == [2, 32, 5, 4] and body["attention_outputs"] == ["weights"]
    hidden = 32 // 4
    assert body["parameter_count"] == 32 * hidden + hidden + hidden * 32 + 32
    assert body["flops"] == 2 * (2 * 2 * 32 * hidden)  # two matmuls of [2, 32] x [32, 8] and [2, 8] x [8, 32]
    assert body["time_ms"]["forward"] > 0 and body["time_ms"]["total"] >= body["time_ms"]["forward"]
    again = run_client.post(f"/techniques/{SE}/run", json={"inputs": {"x": _jt(x)},
                                                           "hyperparameters": {"reduction": 4}, "seed": 3}).json()
    assert again["outputs"] == body["outputs"]


def test_user_weights_give_the_papers_numbers(run_client):
    x = np.random.default_rng(0).normal(size=(2, 8, 3, 3))
    rng = np.random.default_rng(1)
    w = {"fc1.weight": rng.normal(size=(2, 8)), "fc1.bias": rng.normal(size=2),
         "fc2.weight": rng.normal(size=(8, 2)), "fc2.bias": rng.normal(size=8)}
    r = run_client.post(f"/techniques/{SE}/run", json={
        "inputs": {"x": {"shape": list(x.shape), "dtype": "float64", "data": x.tolist()}}, "dtype": "float64",
        "hyperparameters": {"reduction": 4},
        "weights": {k: {"shape": list(v.shape), "dtype": "float64", "data": v.tolist()} for k, v in w.items()}})
    assert r.status_code == 200, r.text
    want_out, want_s = _numpy_se(x, w)
    body = r.json()
    assert body["outputs"]["output"]["dtype"] == "float64"
    np.testing.assert_allclose(np.array(body["outputs"]["output"]["data"]), want_out, rtol=1e-12)
    np.testing.assert_allclose(np.array(body["outputs"]["weights"]["data"]), want_s, rtol=1e-12)


def test_safetensors_in_and_out(run_client):
    x = torch.randn(2, 16, 6, 6)
    r = run_client.post(f"/techniques/{SE}/run?seed=5&hyperparameters=%7B%22reduction%22%3A4%7D",
                        content=st_save({"x": x}),
                        headers={"Content-Type": "application/vnd.safetensors", "Accept": "application/vnd.safetensors"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.safetensors"
    out = st_load(r.content)
    want = runtime.run(registry.get(SE), {"x": x}, {"reduction": 4}, seed=5)
    torch.testing.assert_close(out["output"], want["output"])
    torch.testing.assert_close(out["weights"], want["weights"])
    header_len = struct.unpack("<Q", r.content[:8])[0]
    meta = json.loads(json.loads(r.content[8:8 + header_len])["__metadata__"]["atlas"])
    assert meta["technique"] == SE and meta["seed"] == 5 and meta["hyperparameters"] == {"reduction": 4}


def test_npy_body_and_multipart_with_weights(run_client):
    x = np.random.default_rng(2).normal(size=(1, 8, 4, 4)).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, x)
    r = run_client.post(f"/techniques/{SE}/run?hyperparameters=%7B%22reduction%22%3A2%7D&seed=1",
                        content=buf.getvalue(), headers={"Content-Type": "application/x-npy"})
    assert r.status_code == 200, r.text
    want = runtime.run(registry.get(SE), {"x": torch.from_numpy(x)}, {"reduction": 2}, seed=1)
    torch.testing.assert_close(torch.tensor(r.json()["outputs"]["output"]["data"]), want["output"])

    rng = np.random.default_rng(3)
    w = {"fc1.weight": rng.normal(size=(4, 8)), "fc1.bias": rng.normal(size=4),
         "fc2.weight": rng.normal(size=(8, 4)), "fc2.bias": rng.normal(size=8)}
    files = {"inputs": ("x.safetensors", st_save({"x": torch.from_numpy(x)}), "application/vnd.safetensors"),
             "weights": ("w.safetensors", st_save({k: torch.from_numpy(v).float() for k, v in w.items()}),
                         "application/vnd.safetensors"),
             "options": (None, json.dumps({"hyperparameters": {"reduction": 2}, "return_attention": False}))}
    r = run_client.post(f"/techniques/{SE}/run", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["outputs"]) == {"output"}
    want_out, _ = _numpy_se(x.astype(np.float64), w)
    np.testing.assert_allclose(np.array(body["outputs"]["output"]["data"]), want_out, rtol=1e-4, atol=1e-5)


def test_batch_runs_each_technique_on_the_same_input(run_client):
    slugs = [s for s in (SE, "cbam", "efficient-channel-attention") if registry.get(s)]
    x = torch.randn(1, 16, 4, 4)
    r = run_client.post("/run", json={"techniques": slugs, "inputs": {"x": _jt(x)}, "seed": 2,
                                      "hyperparameters": {SE: {"reduction": 4}}})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert list(results) == slugs
    for slug in slugs:
        params = {"reduction": 4} if slug == SE else {}
        want = runtime.run(registry.get(slug), {"x": x}, params, seed=2)
        torch.testing.assert_close(torch.tensor(results[slug]["outputs"]["output"]["data"]), want["output"])


def test_implementation_spec_and_its_example_runs(run_client):
    spec = run_client.get(f"/techniques/{SE}/implementation").json()
    assert spec["inputs"][0]["dims"] == ["B", "C", "H", "W"]
    assert {h["name"] for h in spec["hyperparameters"]} == {"reduction"}
    module = runtime.build_module(registry.get(SE), spec["parameters"]["for_inputs"],
                                  spec["parameters"]["hyperparameters"], seed=0)
    assert spec["parameters"]["shapes"] == {k: list(v.shape) for k, v in module.state_dict().items()}
    assert "class SqueezeExcitation" in spec["source"]
    ex = spec["example_request"]
    r = run_client.post(ex["url"], json=ex["json"])
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("payload,status,needles", [
    ({"inputs": {"x": {"shape": [2, 8, 4], "data": [0.0] * 64}}}, 422, ["'x'", "rank 3", "B, C, H, W"]),
    ({"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.0] * 32}}, "hyperparameters": {"reduction": 0}}, 422,
     ["reduction", "minimum"]),
    ({"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.0] * 32}}, "hyperparameters": {"ratio": 2}}, 422,
     ["ratio", "reduction"]),
    ({"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.0] * 32}}, "hyperparameters": {"reduction": 16}}, 422,
     ["reduction=16"]),
    ({"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.0] * 31}}}, 400, ["31 values", "shape"]),
    ({"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.0] * 32, "dtype": "int8"}}}, 400, ["int8", "float32"]),
    ({"inputs": {"y": {"shape": [1, 8, 2, 2], "data": [0.0] * 32}}}, 422, ["'y'", "x"]),
    ({"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [float("nan")] + [0.0] * 31}}}, 422, ["NaN", "allow_nonfinite"]),
    ({"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.0] * 32}}, "device": "cuda"}, 422, ["cuda"]),
    ({"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.0] * 32}}, "dtype": "int32"}, 422, ["dtype"]),
    ({"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.0] * 32}}, "seed": -1}, 422, ["seed"]),
    ({"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.0] * 32}}, "colour": 1}, 422, ["colour"]),
    ({"inputs": {"x": {"shape": [1000, 1000], "data": []}}}, 413, ["1000000 elements", "200000"]),
    ({"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.0] * 32}},
      "weights": {"fc1.weight": {"shape": [1, 8], "data": [0.0] * 8}}}, 422,
     ["missing weights", "fc2.weight", "fc1.weight' has shape [1, 8], expected [4, 8]"]),
])
def test_bad_json_runs_get_clear_4xx(run_client, payload, status, needles):
    payload.setdefault("hyperparameters", {"reduction": 2})
    _err(run_client.post(f"/techniques/{SE}/run", content=json.dumps(payload),
                         headers={"Content-Type": "application/json"}), status, *needles)


def test_nonfinite_allowed_when_asked(run_client):
    x = [float("inf")] + [0.0] * 31
    r = run_client.post(f"/techniques/{SE}/run", content=json.dumps({
        "inputs": {"x": {"shape": [1, 8, 2, 2], "data": x}}, "hyperparameters": {"reduction": 2},
        "allow_nonfinite": True}), headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    assert r.json()["outputs"]["output"]["data"][0][0][0][0] is None  # JSON has no infinity: null


def test_bad_binary_bodies(run_client):
    good = st_save({"x": torch.randn(1, 8, 2, 2)})
    st = {"Content-Type": "application/vnd.safetensors"}
    _err(run_client.post(f"/techniques/{SE}/run", content=good[:-10], headers=st), 400, "truncated")
    _err(run_client.post(f"/techniques/{SE}/run", content=b"\x05\x00\x00\x00\x00\x00\x00\x00{abc}", headers=st),
         400, "not valid JSON")
    _err(run_client.post(f"/techniques/{SE}/run", content=b"\x01", headers=st), 400, "truncated")
    huge = struct.pack("<Q", 10**12) + b"{}"
    _err(run_client.post(f"/techniques/{SE}/run", content=huge, headers=st), 400, "header length")
    ints = st_save({"x": torch.zeros(1, 8, 2, 2, dtype=torch.int64)})
    _err(run_client.post(f"/techniques/{SE}/run", content=ints, headers=st), 400, "I64", "F32")
    # an .npy holding Python objects would need unpickling: refused from its header
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _err(run_client.post(f"/techniques/{SE}/run", content=buf.getvalue(), headers={"Content-Type": "application/x-npy"}),
         400, "dtype")
    arr = io.BytesIO()
    np.save(arr, np.zeros((1, 8, 2, 2), dtype=np.float32))
    _err(run_client.post(f"/techniques/{SE}/run", content=arr.getvalue()[:-4],
                         headers={"Content-Type": "application/x-npy"}), 400, "truncated")
    _err(run_client.post(f"/techniques/{SE}/run", content=b"x,y\n1,2", headers={"Content-Type": "text/csv"}),
         415, "application/vnd.safetensors")
    _err(run_client.post(f"/techniques/{SE}/run", content=b"{not json", headers={"Content-Type": "application/json"}),
         400, "not valid JSON")
    _err(run_client.post(f"/techniques/{SE}/run?hyperparameters=nope", content=good, headers=st), 400, "JSON object")


def test_size_limits_are_enforced_before_reading(run_client):
    big = b"\0" * 3_100_000
    _err(run_client.post(f"/techniques/{SE}/run", content=big,
                         headers={"Content-Type": "application/vnd.safetensors"}), 413, "limit")
    header = json.dumps({"x": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}).encode()
    body = struct.pack("<Q", len(header)) + header  # announces 1M elements; refused from the header alone
    _err(run_client.post(f"/techniques/{SE}/run", content=body,
                         headers={"Content-Type": "application/vnd.safetensors"}), 413, "1000000")


def test_accept_and_unknown_technique(run_client):
    payload = {"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.0] * 32}}, "hyperparameters": {"reduction": 2}}
    _err(run_client.post(f"/techniques/{SE}/run", json=payload, headers={"Accept": "text/csv"}), 406, "application/json")
    _err(run_client.post("/techniques/no-such-thing/run", json=payload), 404, "no-such-thing")
    _err(run_client.post("/run", json={"techniques": [SE, "no-such-thing"], "inputs": payload["inputs"]}), 404,
         "no-such-thing")
    _err(run_client.post("/run", json={"techniques": [SE], "inputs": payload["inputs"],
                                       "hyperparameters": {SE: {"reduction": 99}}}), 422, SE, "reduction")


def test_busy_pool_answers_503_and_recovers(run_client):
    pool = run_client.app.state.runs.pool
    payload = {"inputs": {"x": {"shape": [1, 8, 2, 2], "data": [0.0] * 32}}, "hyperparameters": {"reduction": 2}}
    held = pool.capacity
    pool._outstanding += held  # every slot and queue place taken
    try:
        err = _err(run_client.post(f"/techniques/{SE}/run", json=payload), 503, "busy")
        assert err["code"] == "busy"
    finally:
        pool._outstanding -= held
    assert pool.inflight == 0
    assert run_client.post(f"/techniques/{SE}/run", json=payload).status_code == 200
    assert pool.inflight == 0


def test_module_cache_never_mixes_client_weights_with_seeded_ones(run_client):
    x = torch.randn(1, 8, 3, 3)
    base = {"inputs": {"x": _jt(x)}, "hyperparameters": {"reduction": 2}, "seed": 11}
    seeded = run_client.post(f"/techniques/{SE}/run", json=base).json()["outputs"]["output"]
    zeros = {k: {"shape": s, "data": [0.0] * int(np.prod(s))} for k, s in
             {"fc1.weight": [4, 8], "fc1.bias": [4], "fc2.weight": [8, 4], "fc2.bias": [8]}.items()}
    gated = run_client.post(f"/techniques/{SE}/run", json={**base, "weights": zeros}).json()["outputs"]["output"]
    torch.testing.assert_close(torch.tensor(gated["data"]), x * 0.5)  # zero weights: sigmoid(0) = 0.5 everywhere
    again = run_client.post(f"/techniques/{SE}/run", json=base).json()["outputs"]["output"]
    assert again == seeded
    other_seed = run_client.post(f"/techniques/{SE}/run", json={**base, "seed": 12}).json()["outputs"]["output"]
    assert other_seed != seeded
