"""ECA against a NumPy transcription of Wang et al. (GAP, 1-D conv across channels, sigmoid) and timm's EcaModule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime
from service.mechanisms.efficient_channel_attention import adaptive_kernel_size

MECH = registry.get("efficient-channel-attention")


def numpy_eca(x, w):
    k = w.shape[0]
    b, c = x.shape[:2]
    y = x.mean(axis=(2, 3))
    z = np.zeros((b, c))
    for ch in range(c):                      # omega_c = sigma(sum_m w_m y_{c + m - (k-1)/2}), zero padded
        for m in range(k):
            j = ch + m - (k - 1) // 2
            if 0 <= j < c:
                z[:, ch] += w[m] * y[:, j]
    s = 1.0 / (1.0 + np.exp(-z))
    return x * s[:, :, None, None], s


@pytest.mark.parametrize("c,k", [(64, 0), (40, 5), (7, 0), (256, 0), (256, 3)])
def test_matches_numpy_equations(c, k):
    x = torch.randn(2, c, 5, 6, dtype=torch.float64)
    params = MECH.validate({"x": tuple(x.shape)}, {"kernel_size": k})
    module = runtime.build_module(MECH, {"x": x.shape}, params, seed=3, dtype=torch.float64)
    w = module.state_dict()["conv.weight"].numpy()[0, 0]
    want_out, want_s = numpy_eca(x.numpy(), w)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["output"].numpy(), want_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["weights"].numpy(), want_s, rtol=1e-12, atol=1e-12)


def test_adaptive_kernel_size_follows_eq_12():
    # |log2 C / 2 + 1/2|_odd: C=64 -> 3.5 -> 3, C=256 -> 4.5 -> 5, C=512 -> 5, C=2048 -> 6 -> 7, C=4 -> 1
    assert [adaptive_kernel_size(c) for c in (4, 64, 256, 512, 2048)] == [1, 3, 5, 5, 7]
    m = runtime.build_module(MECH, {"x": (1, 256, 3, 3)}, MECH.defaults(), seed=0)
    assert m.state_dict()["conv.weight"].shape == (1, 1, 5)


def test_fixed_kernel_of_the_released_code_differs_from_the_adaptive_size():
    """kernel_size=3 (the released training default) against psi(256) = 5: different gates."""
    x = torch.randn(2, 256, 3, 3, dtype=torch.float64)
    fixed = runtime.build_module(MECH, {"x": x.shape}, MECH.resolve_params({"kernel_size": 3}), seed=1,
                                 dtype=torch.float64)
    adaptive = runtime.build_module(MECH, {"x": x.shape}, MECH.defaults(), seed=1, dtype=torch.float64)
    assert fixed.conv.weight.shape[-1] == 3 and adaptive.conv.weight.shape[-1] == 5
    with torch.no_grad():          # same taps in the middle, two extra taps in the adaptive kernel
        adaptive.conv.weight.zero_()
        adaptive.conv.weight[..., 1:4] = fixed.conv.weight
    a = runtime.forward(MECH, fixed, {"x": x})["weights"]
    b = runtime.forward(MECH, adaptive, {"x": x})["weights"]
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)      # zero outer taps: the same operator
    with torch.no_grad():
        adaptive.conv.weight[..., 0] = 0.5
    assert not torch.allclose(a, runtime.forward(MECH, adaptive, {"x": x})["weights"])


def test_gate_in_unit_interval_and_rejects_even_kernel():
    out = runtime.run(MECH, {"x": torch.randn(2, 16, 4, 4)}, seed=0)
    assert ((out["weights"] > 0) & (out["weights"] < 1)).all()
    with pytest.raises(Exception, match="odd"):
        MECH.validate({"x": (1, 16, 4, 4)}, {"kernel_size": 4})


@pytest.mark.parametrize("c", [64, 256])
def test_conforms_to_timm_ecamodule(timm_layers, c):
    ours = runtime.build_module(MECH, {"x": (2, c, 7, 7)}, MECH.defaults(), seed=4)
    theirs = timm_layers.EcaModule(channels=c).eval()
    theirs.load_state_dict({"conv.weight": ours.state_dict()["conv.weight"]})
    x = torch.randn(2, c, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["output"], theirs(x), rtol=1e-5, atol=1e-6)
