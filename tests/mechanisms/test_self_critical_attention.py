"""Self-critical attention against a NumPy transcription with explicit loops."""

from __future__ import annotations

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("self-critical-attention")


def sig(z):
    return 1 / (1 + np.exp(-z))


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_matches_numpy_loops():
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64)
    params = MECH.resolve_params({"reduction": 4, "classes": 5, "critic_hidden": 6})
    module = runtime.build_module(MECH, {"x": x.shape}, params, seed=3, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    got = runtime.forward(MECH, module, {"x": x})
    for b in range(2):
        f = x[b].numpy()
        a_s = np.zeros((3, 4))
        for i in range(3):
            for j in range(4):
                hid = np.maximum(sd["sp1.weight"][:, :, 0, 0] @ f[:, i, j] + sd["sp1.bias"], 0)
                a_s[i, j] = sig(sd["sp2.weight"][0, :, 0, 0] @ hid + sd["sp2.bias"][0])
        g = f.mean((1, 2))
        a_c = sig(sd["ch2.weight"] @ np.maximum(sd["ch1.weight"] @ g + sd["ch1.bias"], 0) + sd["ch2.bias"])
        out = f * a_s[None] * a_c[:, None, None]
        ga = out.mean((1, 2))
        q = sd["critic2.weight"][0] @ np.maximum(sd["critic1.weight"] @ np.concatenate([g, ga]) + sd["critic1.bias"], 0)
        q += sd["critic2.bias"][0]
        pa = softmax(sd["classifier.weight"] @ ga + sd["classifier.bias"])
        pr = softmax(sd["classifier.weight"] @ g + sd["classifier.bias"])
        y = pa.argmax()
        np.testing.assert_allclose(got["output"][b].numpy(), out, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got["spatial_attention"][b].numpy(), a_s, rtol=1e-10)
        np.testing.assert_allclose(got["channel_attention"][b].numpy(), a_c, rtol=1e-10)
        np.testing.assert_allclose(got["critic_value"][b].item(), q, rtol=1e-10)
        np.testing.assert_allclose(got["reward"][b].item(), pa[y] - pr[y], rtol=1e-9, atol=1e-12)


def test_gates_in_unit_interval():
    out = runtime.run(MECH, {"x": torch.randn(2, 16, 5, 5)})
    for k in ("spatial_attention", "channel_attention"):
        assert ((out[k] > 0) & (out[k] < 1)).all()
    assert (out["reward"].abs() <= 1).all()
