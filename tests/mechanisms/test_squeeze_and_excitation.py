"""SE block against a NumPy transcription of Hu et al. Eqs. 2-4 and against timm's SEModule."""

from __future__ import annotations

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("squeeze-and-excitation")


def numpy_se(x, w1, b1, w2, b2):
    z = x.mean(axis=(2, 3))                                  # squeeze
    h = np.maximum(z @ w1.T + b1, 0.0)                       # W1, ReLU
    s = 1.0 / (1.0 + np.exp(-(h @ w2.T + b2)))               # W2, sigmoid
    return x * s[:, :, None, None], s


def test_matches_numpy_equations():
    x = torch.randn(3, 32, 6, 5, dtype=torch.float64)
    module = runtime.build_module(MECH, {"x": x.shape}, {"reduction": 4}, seed=11, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want_out, want_s = numpy_se(x.numpy(), sd["fc1.weight"], sd["fc1.bias"], sd["fc2.weight"], sd["fc2.bias"])
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["output"].numpy(), want_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["weights"].numpy(), want_s, rtol=1e-12, atol=1e-12)


def test_output_is_input_times_gate_in_unit_interval():
    x = torch.randn(2, 16, 4, 4)
    out = runtime.run(MECH, {"x": x}, {"reduction": 4}, seed=0)
    s = out["weights"]
    assert ((s > 0) & (s < 1)).all()
    torch.testing.assert_close(out["output"], x * s[:, :, None, None])


def test_conforms_to_timm_semodule(timm_layers):
    c, r = 64, 16
    ours = runtime.build_module(MECH, {"x": (2, c, 7, 7)}, {"reduction": r}, seed=4)
    theirs = timm_layers.SEModule(c, rd_channels=c // r).eval()
    sd = ours.state_dict()
    theirs.load_state_dict({
        "fc1.weight": sd["fc1.weight"][:, :, None, None], "fc1.bias": sd["fc1.bias"],
        "fc2.weight": sd["fc2.weight"][:, :, None, None], "fc2.bias": sd["fc2.bias"],
    })
    x = torch.randn(2, c, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["output"], theirs(x), rtol=1e-5, atol=1e-6)
