"""FcaNet against a NumPy transcription (explicit DCT cosines, channel parts, SE-style fc) and DCT properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime
from service.mechanisms.frequency_channel_attention import FREQ_INDICES

MECH = registry.get("frequency-channel-attention")


def basis(u, v, h, w):
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            cu = math.cos(math.pi * u * (i + 0.5) / h) / math.sqrt(h) * (math.sqrt(2) if u else 1.0)
            cv = math.cos(math.pi * v * (j + 0.5) / w) / math.sqrt(w) * (math.sqrt(2) if v else 1.0)
            out[i, j] = cu * cv
    return out


def numpy_fca(x, w1, w2, n, selection, size):
    b, c, h, w = x.shape
    if (h, w) != (size, size):                      # adaptive average pooling (exact for divisible sizes)
        x_p = x.reshape(b, c, size, h // size, size, w // size).mean(axis=(3, 5))
    else:
        x_p = x
    us, vs = FREQ_INDICES[selection]
    part = c // n
    freq = np.zeros((b, c))
    for i in range(n):
        bas = basis(us[i] * (size // 7), vs[i] * (size // 7), size, size)
        freq[:, i * part:(i + 1) * part] = (x_p[:, i * part:(i + 1) * part] * bas).sum(axis=(2, 3))
    s = 1.0 / (1.0 + np.exp(-(np.maximum(freq @ w1.T, 0.0) @ w2.T)))
    return x * s[:, :, None, None], s


@pytest.mark.parametrize("params,shape", [({}, (2, 32, 7, 7)), ({"num_freq": 4, "selection": "low", "reduction": 4},
                                                                 (2, 16, 14, 21)),
                                          ({"num_freq": 8, "selection": "bot", "dct_size": 14}, (1, 32, 14, 14))])
def test_matches_numpy_equations(params, shape):
    x = torch.randn(*shape, dtype=torch.float64)
    resolved = MECH.validate({"x": shape}, params)
    module = runtime.build_module(MECH, {"x": shape}, resolved, seed=2, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want_out, want_s = numpy_fca(x.numpy(), sd["fc1.weight"], sd["fc2.weight"], resolved["num_freq"],
                                 resolved["selection"], resolved["dct_size"])
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["weights"].numpy(), want_s, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), want_out, rtol=1e-12, atol=1e-12)


def test_lowest_frequency_is_scaled_global_average_pooling():
    """Paper Sec. 3.2: GAP is the (0, 0) DCT component; with one frequency FcaNet reduces to SE."""
    module = runtime.build_module(MECH, {"x": (2, 16, 7, 7)}, MECH.validate({"x": (2, 16, 7, 7)}, {"num_freq": 1}),
                                  seed=0, dtype=torch.float64)
    torch.testing.assert_close(module.dct_filter(torch.float64), torch.full((16, 7, 7), 1.0 / 7, dtype=torch.float64))


def test_dct_basis_is_orthonormal():
    module = runtime.build_module(MECH, {"x": (1, 32, 7, 7)}, MECH.validate({"x": (1, 32, 7, 7)}, {"num_freq": 32}),
                                  seed=0, dtype=torch.float64)
    f = module.dct_filter(torch.float64).reshape(32, 49)                 # 32 distinct frequencies, one channel each
    torch.testing.assert_close(f @ f.T, torch.eye(32, dtype=torch.float64), atol=1e-12, rtol=0)


def test_rejects_indivisible_channels():
    with pytest.raises(Exception, match="num_freq"):
        MECH.validate({"x": (1, 24, 7, 7)})
