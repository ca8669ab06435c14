"""Malformed run requests get a 4xx in the error shape: deep JSON in every place a run reads JSON (body,
batch body, multipart options, the hyperparameters query parameter, a safetensors header), tensor
descriptions of the wrong type, malformed safetensors headers and .npy files, and option parts that are
not UTF-8. The OpenAPI document states the run bodies it accepts."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save as st_save

from service.main import create_app
from tests.conftest import make_settings

SLUG = "squeeze-and-excitation"
RUN = f"/techniques/{SLUG}/run"
SAFETENSORS = {"Content-Type": "application/vnd.safetensors"}
NPY = {"Content-Type": "application/x-npy"}
DEPTH = 1100
DEEP = "[" * DEPTH + "]" * DEPTH


@pytest.fixture(scope="module")
def run_client(tmp_path_factory):
    with TestClient(create_app(make_settings(tmp_path_factory.mktemp("runs"))), raise_server_exceptions=False) as c:
        yield c


def _error(resp, low: int = 400, high: int = 499) -> dict:
    assert low <= resp.status_code <= high, (resp.status_code, resp.text[:500])
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert len(resp.content) < 8000
    return body["error"]


def _x() -> np.ndarray:
    return np.linspace(-1, 1, 1 * 8 * 2 * 2, dtype=np.float32).reshape(1, 8, 2, 2)


def _safetensors(header: dict | str, data: bytes = b"") -> bytes:
    raw = header.encode() if isinstance(header, str) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _multipart(options: bytes) -> dict:
    return {"files": {"inputs": ("x.safetensors", st_save({"x": _x()}), "application/octet-stream"),
                      "options": ("options.json", options, "application/json")}}


# --- deep JSON ----------------------------------------------------------------------------------------

def test_deep_json_run_body(run_client):
    _error(run_client.post(RUN, content='{"inputs": ' + DEEP + "}", headers={"Content-Type": "application/json"}))


def test_deep_json_batch_body(run_client):
    body = '{"techniques": ["' + SLUG + '"], "inputs": ' + DEEP + "}"
    _error(run_client.post("/run", content=body, headers={"Content-Type": "application/json"}))


def test_deep_json_in_the_hyperparameters_query(run_client):
    _error(run_client.post(RUN, params={"hyperparameters": '{"reduction": ' + DEEP + "}"},
                           content=st_save({"x": _x()}), headers=SAFETENSORS))


def test_deep_json_in_multipart_options(run_client):
    _error(run_client.post(RUN, **_multipart(('{"hyperparameters": ' + DEEP + "}").encode())))


def test_deep_json_in_a_safetensors_header(run_client):
    body = _safetensors('{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "deep": ' + DEEP + "}}",
                        b"\0" * 4)
    _error(run_client.post(RUN, content=body, headers=SAFETENSORS))


# --- tensor descriptions of the wrong type ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", [["float32"], {"name": "float32"}, 3, None])
def test_json_input_dtype_of_the_wrong_type(run_client, dtype):
    x = {"shape": [1, 8, 2, 2], "data": _x().ravel().tolist(), "dtype": dtype}
    _error(run_client.post(RUN, json={"inputs": {"x": x}, "hyperparameters": {"reduction": 2}}))


@pytest.mark.parametrize("info", [
    {"dtype": "F32", "shape": [1, 8, 2, 2], "data_offsets": 128},
    {"dtype": "F32", "shape": [1, 8, 2, 2], "data_offsets": [0, 64, 128]},
    {"dtype": "F32", "shape": [1, 8, 2, 2], "data_offsets": ["0", "128"]},
    {"dtype": ["F32"], "shape": [1, 8, 2, 2], "data_offsets": [0, 128]},
    {"dtype": "F32", "shape": "1,8,2,2", "data_offsets": [0, 128]},
    {"dtype": "F32", "shape": [1, 8, 2, 2], "data_offsets": [128, 0]},
    "not an object",
])
def test_malformed_safetensors_headers(run_client, info):
    body = _safetensors({"x": info}, _x().tobytes())
    _error(run_client.post(RUN, content=body, headers=SAFETENSORS))


def test_npy_with_an_unknown_format_version(run_client):
    buf = io.BytesIO()
    np.save(buf, _x())
    data = bytearray(buf.getvalue())
    data[6], data[7] = 9, 9  # the magic string's version bytes: 9.9
    _error(run_client.post(RUN, content=bytes(data), headers=NPY))


def test_truncated_npy_is_400(run_client):
    buf = io.BytesIO()
    np.save(buf, _x())
    _error(run_client.post(RUN, content=buf.getvalue()[:20], headers=NPY))


def test_multipart_options_that_are_not_utf8(run_client):
    _error(run_client.post(RUN, **_multipart(b'{"seed": "\xff\xfe"}')))


# --- the OpenAPI document states the run bodies it accepts (schema-valid bodies are not refused) ----------

@pytest.mark.parametrize("path", ["/run", "/techniques/{slug}/run"])
def test_run_bodies_have_a_schema_that_excludes_null(run_client, path):
    from jsonschema import Draft202012Validator

    content = run_client.get("/openapi.json").json()["paths"][path]["post"]["requestBody"]["content"]
    schema = content["application/json"].get("schema")
    assert schema is not None
    resolver_doc = run_client.get("/openapi.json").json()
    validator = Draft202012Validator({**schema, "components": resolver_doc.get("components", {})})
    assert not validator.is_valid(None) and not validator.is_valid(0)
    assert run_client.post(path.replace("{slug}", SLUG), content=b"null",
                           headers={"Content-Type": "application/json"}).status_code in (400, 422)


def test_multipart_schema_names_only_the_parts_the_server_takes(run_client):
    content = run_client.get("/openapi.json").json()["paths"]["/techniques/{slug}/run"]["post"]["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"].get("additionalProperties") is False
