"""Reverse attention (Huang et al., BMVC 2017) against a NumPy transcription, with its limiting
behaviour: confident original scores switch the reverse branch off."""

from __future__ import annotations

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("reverse-attention")


def test_matches_numpy_per_pixel():
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    module = runtime.build_module(MECH, {"x": x.shape}, {"num_classes": 5}, seed=0, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want = np.zeros((2, 5, 3, 4))
    att = np.zeros((2, 5, 3, 4))
    for b in range(2):
        for i in range(3):
            for j in range(4):
                f = x.numpy()[b, :, i, j]
                p = sd["conv_org.weight"][:, :, 0, 0] @ f + sd["conv_org.bias"]
                r = sd["conv_rev.weight"][:, :, 0, 0] @ f + sd["conv_rev.bias"]
                a = 1 / (1 + np.exp(p))                        # sigmoid(-p)
                att[b, :, i, j] = a
                want[b, :, i, j] = p - a * r
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["reverse_attention"].numpy(), att, rtol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), want, rtol=1e-12, atol=1e-14)


def test_confident_scores_silence_the_reverse_branch():
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    module = runtime.build_module(MECH, {"x": x.shape}, {"num_classes": 3}, seed=1, dtype=torch.float64)
    with torch.no_grad():
        module.conv_org.bias.copy_(torch.tensor([40.0, -40.0, 0.0]))
        module.conv_org.weight.zero_()
    out = runtime.forward(MECH, module, {"x": x})
    torch.testing.assert_close(out["output"][:, 0], out["original_scores"][:, 0])          # A ~ 0
    torch.testing.assert_close(out["output"][:, 1], -40.0 - out["reverse_scores"][:, 1])   # A ~ 1
    torch.testing.assert_close(out["reverse_attention"][:, 2], torch.full((1, 2, 2), 0.5, dtype=torch.float64))
