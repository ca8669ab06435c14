"""The client in a process where torch cannot be imported: NumPy in, NumPy out, against a real server."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import torch

from service.mechanisms import registry, runtime

from .conftest import REPO


def test_numpy_client_needs_no_torch(live_server, tmp_path):
    x = np.random.default_rng(3).standard_normal((2, 16, 5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any import of torch now fails
        sys.path.insert(0, {str(REPO)!r})
        import numpy as np
        from service.client import AtlasClient
        with AtlasClient({live_server!r}) as atlas:
            out = atlas.run("cbam", np.load("x.npy"), reduction=4, seed=2)
            assert atlas.count(subcategory="channel") > 0
        np.savez("out.npz", **out)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "safetensors")))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['torch']"  # only the blocked entry itself
    got = np.load(tmp_path / "out.npz")
    want = runtime.run(registry.get("cbam"), {"x": torch.from_numpy(x)}, {"reduction": 4}, seed=2)
    assert set(got.files) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k].numpy(), rtol=1e-6, atol=1e-6)
