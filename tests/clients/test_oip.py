"""Open Inference Protocol v2 with a real client: tritonclient's HTTP client against uvicorn on loopback,
compared with the in-process module (service.mechanisms.runtime.run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import httpx
import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

from .conftest import REPO

http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

CASES = [
    ("squeeze-and-excitation", {"x": (2, 32, 7, 6)}, {"reduction": 8}),
    ("cbam", {"x": (2, 16, 9, 8)}, {"reduction": 4, "spatial_norm": True}),
    ("non-local", {"x": (1, 16, 6, 5)}, {"pairwise": "dot_product"}),
    ("vision-transformer", {"x": (2, 16, 16, 16)}, {"patch_size": 8, "heads": 4}),
]


@pytest.fixture(scope="module")
def triton(live_server):
    client = http.InferenceServerClient(url=live_server.removeprefix("http://"), network_timeout=120.0)
    yield client
    client.close()


def _inputs(shapes: dict, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}


def _infer_input(name: str, array: np.ndarray, datatype: str, binary: bool = True):
    t = http.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array, binary_data=binary)
    return t


def test_server_and_model_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "attention-atlas" and "binary_tensor_data" in meta["extensions"]
    assert triton.is_model_ready("cbam") and not triton.is_model_ready("cbm")
    assert triton.is_model_ready("cbam", model_version="1") and not triton.is_model_ready("cbam", model_version="2")
    mech = registry.get("vision-transformer")
    meta = triton.get_model_metadata("vision-transformer")
    assert meta["name"] == "vision-transformer" and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == [i.name for i in mech.inputs]
    assert [o["name"] for o in meta["outputs"]] == [o.name for o in mech.outputs]
    assert meta["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, -1, -1, -1]}
    cbam = triton.get_model_metadata("cbam")
    assert cbam["outputs"][2]["shape"] == [-1, 1, -1, -1]  # a fixed size stays a number
    with pytest.raises(InferenceServerException, match="unknown model 'cbm'"):
        triton.get_model_metadata("cbm")


@pytest.mark.parametrize(("slug", "shapes", "params"), CASES, ids=[c[0] for c in CASES])
def test_binary_inputs_and_outputs_equal_the_module(triton, slug, shapes, params):
    mech = registry.get(slug)
    arrays = _inputs(shapes, seed=len(slug))
    names = [o.name for o in mech.outputs]
    result = triton.infer(slug, [_infer_input(k, v, "FP32") for k, v in arrays.items()],
                          outputs=[http.InferRequestedOutput(n, binary_data=True) for n in names],
                          parameters={**params, "seed": 11}, request_id="r-1")
    want = runtime.run(mech, {k: torch.from_numpy(v) for k, v in arrays.items()}, params, seed=11)
    response = result.get_response()
    assert response["model_name"] == slug and response["id"] == "r-1"
    assert [o["name"] for o in response["outputs"]] == names
    assert all("binary_data_size" in o["parameters"] and "data" not in o for o in response["outputs"])
    for name in names:
        got = result.as_numpy(name)
        assert got.dtype == np.float32 and got.shape == tuple(want[name].shape)
        np.testing.assert_allclose(got, want[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{slug}.{name}")


def test_defaults_json_outputs_and_output_selection(triton):
    """No outputs named: every output comes back binary (tritonclient sets binary_data_output); JSON outputs
    on request; naming only `output` leaves the attention maps out."""
    arrays = _inputs({"x": (1, 8, 5, 5)}, seed=2)
    inputs = [_infer_input("x", arrays["x"], "FP32", binary=False)]  # JSON input data
    want = runtime.run(registry.get("cbam"), {"x": torch.from_numpy(arrays["x"])}, {"reduction": 2})
    every = triton.infer("cbam", inputs, parameters={"reduction": 2})
    assert [o["name"] for o in every.get_response()["outputs"]] == ["output", "channel_weights", "spatial_map"]
    only = triton.infer("cbam", inputs, outputs=[http.InferRequestedOutput("output", binary_data=False)],
                        parameters={"reduction": 2})
    assert [o["name"] for o in only.get_response()["outputs"]] == ["output"]
    assert "data" in only.get_response()["outputs"][0]
    for result in (every, only):
        np.testing.assert_allclose(result.as_numpy("output"), want["output"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(every.as_numpy("spatial_map"), want["spatial_map"].numpy(), rtol=1e-5, atol=1e-6)


def test_fp64_and_bf16(triton):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = _inputs({"x": (1, 8, 4, 3)}, seed=5, dtype=np.float64)["x"]
    result = triton.infer("squeeze-and-excitation", [_infer_input("x", x, "FP64")], parameters={"reduction": 2})
    want = runtime.run(registry.get("squeeze-and-excitation"), {"x": torch.from_numpy(x)}, {"reduction": 2},
                       dtype=torch.float64)
    assert result.as_numpy("output").dtype == np.float64
    np.testing.assert_allclose(result.as_numpy("output"), want["output"].numpy(), rtol=1e-12, atol=1e-12)
    xb = x.astype(ml_dtypes.bfloat16)
    result = triton.infer("squeeze-and-excitation", [_infer_input("x", xb, "BF16")], parameters={"reduction": 2})
    xt = torch.from_numpy(xb.astype(np.float32)).to(torch.bfloat16)
    want = runtime.run(registry.get("squeeze-and-excitation"), {"x": xt}, {"reduction": 2}, dtype=torch.bfloat16)
    got = result.as_numpy("output")
    assert got.dtype == ml_dtypes.bfloat16 and result.get_output("output")["datatype"] == "BF16"
    np.testing.assert_array_equal(got.astype(np.float32), want["output"].float().numpy())


def test_errors_have_the_protocol_shape(triton, live_server):
    x = _inputs({"x": (1, 8, 4, 4)})["x"]
    with pytest.raises(InferenceServerException) as info:
        triton.infer("cbam", [_infer_input("x", x, "FP32")], parameters={"reductio": 2})
    assert info.value.status() == "422" and "reductio" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        triton.infer("cbam", [_infer_input("y", x, "FP32")])
    assert info.value.status() == "422" and "'y'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        triton.infer("cbam", [_infer_input("x", x, "FP32")], outputs=[http.InferRequestedOutput("attention")])
    assert info.value.status() == "400" and "channel_weights" in info.value.message()
    # malformed bodies, straight over HTTP
    url = f"{live_server}/v2/models/cbam/infer"
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, 8, 4, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 512}}]}).encode()
    cases = [
        (b"{", {}, 400, "not valid JSON"),
        (header + x.tobytes()[:-4], {"Inference-Header-Content-Length": str(len(header))}, 400, "binary part"),
        (header + x.tobytes(), {}, 400, "Inference-Header-Content-Length"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1]}]}).encode(), {},
         400, "needs 2"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]}).encode(),
         {}, 400, "not supported"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1 << 20, 1 << 20], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 4}}]}).encode(), {}, 413, "limit"),
    ]
    for body, headers, status, words in cases:
        r = httpx.post(url, content=body, headers=headers, timeout=60)
        assert r.status_code == status and words in r.json()["error"], (r.status_code, r.text)
        assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str)
    r = httpx.get(f"{live_server}/v2/models/cbam/nothing")
    assert r.status_code == 404 and isinstance(r.json()["error"], str)


def test_openapi_documents_the_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}",
                 "/v2/models/{model_name}/ready", "/v2/models/{model_name}/infer"):
        assert path in paths, path
    infer = paths["/v2/models/{model_name}/infer"]["post"]
    assert "Inference-Header-Content-Length" in infer["description"]
    assert "application/json" in infer["requestBody"]["content"]


def test_the_http_process_does_not_import_torch_for_oip(tmp_path):
    """Metadata and inference on /v2 run in the workers: the front process stays free of torch."""
    script = textwrap.dedent(f"""
        import sys
        from fastapi.testclient import TestClient
        from service.main import create_app
        from service.settings import Settings
        with TestClient(create_app(Settings(var_dir={str(tmp_path)!r}))) as c:
            assert c.get("/v2/models/cbam").status_code == 200
            r = c.post("/v2/models/cbam/infer", json={{"parameters": {{"reduction": 2}}, "inputs": [
                {{"name": "x", "shape": [1, 4, 2, 2], "datatype": "FP32", "data": [0.5] * 16}}]}})
            assert r.status_code == 200, r.text
        print("torch" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
