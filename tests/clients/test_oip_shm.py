"""The system shared-memory extension with tritonclient's own helpers (tritonclient.utils.shared_memory):
inputs read from, and outputs written to, regions the client created on the same host."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

http = pytest.importorskip("tritonclient.http")
shm = pytest.importorskip("tritonclient.utils.shared_memory")
from tritonclient.utils import InferenceServerException  # noqa: E402


def test_inputs_and_outputs_in_shared_memory(live_server_shm):
    client = http.InferenceServerClient(url=live_server_shm.removeprefix("http://"), network_timeout=120.0)
    assert "system_shared_memory" in client.get_server_metadata()["extensions"]
    x = np.random.default_rng(4).standard_normal((2, 16, 6, 5)).astype(np.float32)
    want = runtime.run(registry.get("cbam"), {"x": torch.from_numpy(x)}, {"reduction": 4}, seed=1)
    tag = uuid.uuid4().hex[:8]
    out_bytes = want["output"].numel() * 4
    map_bytes = want["spatial_map"].numel() * 4
    h_in = shm.create_shared_memory_region("in", f"/atlas_test_in_{tag}", x.nbytes)
    h_out = shm.create_shared_memory_region("out", f"/atlas_test_out_{tag}", 64 + out_bytes + map_bytes)
    try:
        shm.set_shared_memory_region(h_in, [x])
        client.register_system_shared_memory("in", f"/atlas_test_in_{tag}", x.nbytes)
        client.register_system_shared_memory("out", f"/atlas_test_out_{tag}", 64 + out_bytes + map_bytes)
        status = client.get_system_shared_memory_status()
        assert {r["name"] for r in status} == {"in", "out"}
        inp = http.InferInput("x", list(x.shape), "FP32")
        inp.set_shared_memory("in", x.nbytes)
        out = http.InferRequestedOutput("output", binary_data=False)
        out.set_shared_memory("out", out_bytes, offset=64)
        att = http.InferRequestedOutput("spatial_map", binary_data=False)
        att.set_shared_memory("out", map_bytes, offset=64 + out_bytes)
        result = client.infer("cbam", [inp], outputs=[out, att], parameters={"reduction": 4, "seed": 1})
        meta = result.get_output("output")
        assert meta["parameters"] == {"shared_memory_region": "out", "shared_memory_byte_size": out_bytes}
        got = shm.get_contents_as_numpy(h_out, np.float32, [64 // 4 + want["output"].numel() + want["spatial_map"].numel()])
        np.testing.assert_allclose(got[16:16 + want["output"].numel()].reshape(want["output"].shape),
                                   want["output"].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[16 + want["output"].numel():].reshape(want["spatial_map"].shape),
                                   want["spatial_map"].numpy(), rtol=1e-5, atol=1e-6)
        assert not got[:16].any()  # nothing written before the offset asked for
        # an output region too small is refused with the protocol's error
        small = http.InferRequestedOutput("output", binary_data=False)
        small.set_shared_memory("out", out_bytes // 2)
        with pytest.raises(InferenceServerException, match="needs"):
            client.infer("cbam", [inp], outputs=[small], parameters={"reduction": 4})
        client.unregister_system_shared_memory("in")
        with pytest.raises(InferenceServerException, match="no shared-memory region named 'in'"):
            client.infer("cbam", [inp], parameters={"reduction": 4})
        with pytest.raises(InferenceServerException, match="no shared-memory object"):
            client.register_system_shared_memory("bad", f"/atlas_test_missing_{tag}", 16)
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(h_in)
        shm.destroy_shared_memory_region(h_out)
        client.close()


def test_regions_are_refused_unless_enabled(live_server):
    client = http.InferenceServerClient(url=live_server.removeprefix("http://"))
    try:
        assert "system_shared_memory" not in client.get_server_metadata()["extensions"]
        with pytest.raises(InferenceServerException, match="disabled") as info:
            client.register_system_shared_memory("in", "/anything", 16)
        assert info.value.status() == "403"
    finally:
        client.close()
