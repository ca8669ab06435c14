"""Attention pyramid against a NumPy transcription (explicit 3x3 convolution loops, SE bottleneck,
bottom-up averaging of the channel pyramid)."""

from __future__ import annotations

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("attention-pyramid")


def _sig(z):
    return 1 / (1 + np.exp(-z))


def numpy_level(f, sd, name):
    b, c, h, w = f.shape
    fp = np.pad(f, ((0, 0), (0, 0), (1, 1), (1, 1)))
    s = np.zeros((b, 1, h, w))
    for i in range(h):
        for j in range(w):
            s[:, 0, i, j] = np.einsum("bcuv,cuv->b", fp[:, :, i:i + 3, j:j + 3], sd[f"{name}.spatial.weight"][0])
    s = _sig(s + sd[f"{name}.spatial.bias"][0])
    a = _sig(np.maximum(f.mean((2, 3)) @ sd[f"{name}.fc1.weight"].T + sd[f"{name}.fc1.bias"], 0)
             @ sd[f"{name}.fc2.weight"].T + sd[f"{name}.fc2.bias"])
    return s, a


def test_matches_numpy_equations():
    g = torch.Generator().manual_seed(0)
    fs = {"f3": torch.randn(2, 8, 6, 5, generator=g, dtype=torch.float64),
          "f4": torch.randn(2, 8, 3, 3, generator=g, dtype=torch.float64),
          "f5": torch.randn(2, 8, 2, 1, generator=g, dtype=torch.float64)}
    shapes = {k: v.shape for k, v in fs.items()}
    module = runtime.build_module(MECH, shapes, MECH.validate(shapes, {"reduction": 2}), seed=1, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    got = runtime.forward(MECH, module, fs)
    prev = None
    for lvl in (3, 4, 5):
        f = fs[f"f{lvl}"].numpy()
        s, a = numpy_level(f, sd, f"level{lvl}")
        a = a if prev is None else (a + prev) / 2
        prev = a
        want = s * f + a[:, :, None, None] * f
        np.testing.assert_allclose(got["output" if lvl == 3 else f"output_{lvl}"].numpy(), want, rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(got[f"spatial_{lvl}"].numpy(), s, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got[f"channel_{lvl}"].numpy(), a, rtol=1e-10, atol=1e-12)


def test_gates_in_unit_interval():
    shapes = MECH.example_shapes
    out = runtime.run(MECH, {k: torch.randn(*s) for k, s in shapes.items()}, seed=0)
    for k, v in out.items():
        if k.startswith(("spatial", "channel")):
            assert ((v > 0) & (v < 1)).all(), k
