"""The protocol module on its own: parsing limits and shapes, BF16 bit patterns, encoding."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
import torch

from service import oip

LIMITS = oip.Limits(max_tensor_elements=1000, max_total_elements=1500, max_json_bytes=1 << 16)


def _parse(doc, binary: bytes = b"", header: bool | None = None):
    head = json.dumps(doc).encode()
    use_header = bool(binary) if header is None else header
    return oip.parse_infer(head + binary, str(len(head)) if use_header else None, LIMITS)


def test_bf16_bits_match_torch_rounding():
    values = np.concatenate([np.random.default_rng(0).standard_normal(2000).astype(np.float32) * 100,
                             np.array([0.0, -0.0, 1e-40, 3.0e38, np.inf, -np.inf], np.float32)])
    ours = oip.bf16_bits_from_float32(values)
    theirs = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    back = oip.float32_from_bf16_bits(ours)
    np.testing.assert_array_equal(back, torch.from_numpy(values).to(torch.bfloat16).float().numpy())
    assert np.isnan(oip.float32_from_bf16_bits(oip.bf16_bits_from_float32(np.array([np.nan], np.float32))))[0]


def test_json_and_binary_inputs_in_order():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(4, dtype=np.float64).reshape(2, 2) / 3
    req = _parse({"id": "7", "parameters": {"reduction": 2, "seed": 3, "dtype": "FP64", "priority": 1},
                  "inputs": [{"name": "a", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}},
                             {"name": "n", "shape": [2, 2], "datatype": "INT64", "data": [[1, 2], [3, 4]]},
                             {"name": "b", "shape": [2, 2], "datatype": "FP64", "parameters": {"binary_data_size": 32}}],
                  "outputs": [{"name": "output", "parameters": {"binary_data": True}}, {"name": "weights"}]},
                 a.tobytes() + b.tobytes())
    assert list(req.inputs) == ["a", "n", "b"] and req.id == "7"
    np.testing.assert_array_equal(req.inputs["a"].array, a)
    np.testing.assert_array_equal(req.inputs["b"].array, b)
    np.testing.assert_array_equal(req.inputs["n"].array, [[1, 2], [3, 4]])
    assert req.inputs["n"].array.dtype == np.int64 and oip.as_wire(req.inputs["n"])[1] == "float64"
    assert req.hyperparameters == {"reduction": 2} and req.seed == 3 and req.dtype == "float64"
    assert req.ignored == {"priority": 1}
    assert [(o.name, o.binary) for o in req.outputs] == [("output", True), ("weights", False)]


@pytest.mark.parametrize(("doc", "binary", "status", "words"), [
    ({"inputs": []}, b"", 400, "non-empty"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}], "extra": 1}, b"", 400, "unknown"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, "2"]}]}, b"", 400, "str"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, True]}]}, b"", 400, "booleans"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2.5]}]}, b"", 400, "integers"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}]}, b"", 400, "does not fit"),
    ({"inputs": [{"name": "x", "shape": [2, -1], "datatype": "FP32", "data": []}]}, b"", 400, "negative"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32"}]}, b"", 400, "neither"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]},
                 {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}, b"", 400, "twice"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]},
     b"\0" * 4, 400, "takes 8"),
    ({"inputs": [{"name": "x", "shape": [2000], "datatype": "FP32", "parameters": {"binary_data_size": 8000}}]},
     b"", 413, "limit is 1000"),
    ({"inputs": [{"name": "x", "shape": [800], "datatype": "FP32", "parameters": {"binary_data_size": 3200}},
                 {"name": "y", "shape": [800], "datatype": "FP32", "parameters": {"binary_data_size": 3200}}]},
     b"", 413, "in all"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": {"seed": -1}},
     b"", 400, "seed"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": {"dtype": "INT8"}},
     b"", 400, "dtype"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": {"r": [1]}},
     b"", 400, "boolean, number or string"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [[[[[[[[[[1]]]]]]]]]]}]}, b"", 400,
     "deeper"),
])
def test_bad_requests(doc, binary, status, words):
    with pytest.raises(oip.OipError) as info:
        _parse(doc, binary, header=True if binary or "binary_data_size" in json.dumps(doc) else None)
    assert info.value.status == status and words in info.value.message, info.value.message


def test_header_length_is_checked():
    with pytest.raises(oip.OipError, match="non-negative integer"):
        oip.parse_infer(b"{}", "-1", LIMITS)
    with pytest.raises(oip.OipError, match="only 2 bytes"):
        oip.parse_infer(b"{}", "10", LIMITS)


def test_encode_binary_and_json_outputs():
    out = oip.Tensor("output", "FP32", (2, 2), np.arange(4, dtype=np.float32).reshape(2, 2))
    bits = oip.bf16_bits_from_float32(np.array([1.5, -2.0], np.float32))
    att = oip.Tensor("weights", "BF16", (2,), bits)
    body, headers = oip.encode_infer("m", "id-1", [out, att], {"output"}, {"seed": 0, "flops": None})
    n = int(headers["Inference-Header-Content-Length"])
    head = orjson.loads(body[:n])
    assert head["id"] == "id-1" and head["parameters"] == {"seed": 0}
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert head["outputs"][1]["data"] == [1.5, -2.0] and head["outputs"][1]["datatype"] == "BF16"
    np.testing.assert_array_equal(np.frombuffer(body[n:], "<f4"), np.arange(4))
    body, headers = oip.encode_infer("m", None, [out], set())
    assert headers == {} and orjson.loads(body)["outputs"][0]["data"] == [0.0, 1.0, 2.0, 3.0]


def test_shared_memory_parameters():
    req = _parse({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                              "parameters": {"shared_memory_region": "in", "shared_memory_byte_size": 24,
                                             "shared_memory_offset": 8}}],
                  "outputs": [{"name": "output", "parameters": {"shared_memory_region": "out",
                                                                "shared_memory_byte_size": 24}}]})
    assert req.inputs["x"].array is None and req.inputs["x"].shm == oip.ShmRef("in", 24, 8)
    assert req.outputs[0].shm == oip.ShmRef("out", 24, 0) and not req.outputs[0].binary
    for params, words in [({"shared_memory_region": "in", "shared_memory_byte_size": 20}, "takes 24"),
                          ({"shared_memory_byte_size": 24}, "must name"),
                          ({"shared_memory_region": "in", "shared_memory_byte_size": 24, "shared_memory_offset": -1},
                           "non-negative")]:
        with pytest.raises(oip.OipError, match=words):
            _parse({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": params}]})
