"""SOCA against a NumPy transcription of Dai et al. Eqs. 9-14 (explicit centering matrix I_bar) and
against the eigen-decomposition square root when the Newton-Schulz iteration has converged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("second-order-channel-attention")


def numpy_soca(x, sd, iterations):
    b, c, h, w = x.shape
    s = h * w
    i_bar = (np.eye(s) - np.ones((s, s)) / s) / s
    outs, gates, roots = [], [], []
    for n in range(b):
        xm = x[n].reshape(c, s)
        sigma = xm @ i_bar @ xm.T                                    # Eq. 9
        tr = np.trace(sigma)
        y, z = sigma / tr, np.eye(c)
        for _ in range(iterations):                                  # Eqs. 12-13
            y, z = 0.5 * y @ (3 * np.eye(c) - z @ y), 0.5 * (3 * np.eye(c) - z @ y) @ z
        y_hat = np.sqrt(tr) * y                                      # Eq. 14
        zc = y_hat.sum(axis=1) / c                                   # Eq. 10
        hid = np.maximum(sd["conv_down.weight"][:, :, 0, 0] @ zc + sd["conv_down.bias"], 0)
        f = 1 / (1 + np.exp(-(sd["conv_up.weight"][:, :, 0, 0] @ hid + sd["conv_up.bias"])))  # Eq. 11
        outs.append(x[n] * f[:, None, None])
        gates.append(f)
        roots.append(y_hat)
    return np.stack(outs), np.stack(gates), np.stack(roots)


@pytest.mark.parametrize("params,shape", [({}, (2, 32, 6, 5)), ({"reduction": 4, "iterations": 9}, (1, 12, 3, 7))])
def test_matches_numpy_equations(params, shape):
    x = torch.randn(*shape, dtype=torch.float64)
    resolved = MECH.validate({"x": shape}, params)
    module = runtime.build_module(MECH, {"x": shape}, resolved, seed=8, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want = numpy_soca(x.numpy(), sd, resolved["iterations"])
    got = runtime.forward(MECH, module, {"x": x})
    for name, w in zip(("output", "weights", "covariance_sqrt"), want, strict=True):
        np.testing.assert_allclose(got[name].numpy(), w, rtol=1e-10, atol=1e-12)


def test_converged_newton_schulz_is_the_matrix_square_root():
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64)                 # s = 64 >> C: well conditioned
    module = runtime.build_module(MECH, {"x": x.shape}, MECH.validate({"x": (2, 8, 8, 8)},
                                  {"iterations": 30, "reduction": 2}), seed=0, dtype=torch.float64)
    y_hat = runtime.forward(MECH, module, {"x": x})["covariance_sqrt"].numpy()
    for n in range(2):
        xm = x[n].reshape(8, 64).numpy()
        xm = xm - xm.mean(axis=1, keepdims=True)
        evals, evecs = np.linalg.eigh(xm @ xm.T / 64)
        np.testing.assert_allclose(y_hat[n], evecs @ np.diag(np.sqrt(evals)) @ evecs.T, rtol=1e-8, atol=1e-10)


def test_constant_input_gives_finite_output_and_single_position_is_rejected():
    out = runtime.run(MECH, {"x": torch.ones(1, 16, 3, 3)}, seed=0)
    assert torch.isfinite(out["output"]).all()
    with pytest.raises(Exception, match="H\\*W"):
        MECH.validate({"x": (1, 16, 1, 1)})
