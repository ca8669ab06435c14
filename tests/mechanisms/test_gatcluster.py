"""GATCluster head against a NumPy transcription of the two branches (Niu et al. ECCV 2020)."""

from __future__ import annotations

import math

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("gatcluster")


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def mlp(sd, p, x):
    h = np.maximum(sd[f"{p}.0.weight"] @ x + sd[f"{p}.0.bias"], 0)
    return sd[f"{p}.2.weight"] @ h + sd[f"{p}.2.bias"]


def test_matches_numpy_two_branches():
    f = torch.randn(3, 4, 5, 3, dtype=torch.float64)
    module = runtime.build_module(MECH, {"features": f.shape}, MECH.resolve_params({"clusters": 3}), seed=2,
                                  dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    got = runtime.forward(MECH, module, {"features": f})
    x = f.numpy()
    b, c, h, w = x.shape
    probs = []
    for n in range(b):
        col = lambda name: sd[name][:, None, None]  # noqa: E731
        fc = np.einsum("oc,chw->ohw", sd["feature_conv.weight"][:, :, 0, 0], x[n]) + col("feature_conv.bias")
        fc = ((fc - col("feature_bn.running_mean")) / np.sqrt(col("feature_bn.running_var") + 1e-5)
              * col("feature_bn.weight") + col("feature_bn.bias"))
        p = softmax(mlp(sd, "classifier", fc.mean((1, 2))))
        fa = np.einsum("oc,chw->ohw", sd["attention.att_conv.weight"][:, :, 0, 0], x[n])
        fa = fa + col("attention.att_conv.bias")
        fa = np.maximum(fa / np.sqrt(1 + 1e-5) * col("attention.att_bn.weight") + col("attention.att_bn.bias"), 0)
        t = 1 / (1 + np.exp(-(sd["attention.theta.weight"] @ fa.reshape(-1) + sd["attention.theta.bias"])))
        amap = np.array([[math.exp(-((i / (h - 1) - t[0]) ** 2 + (j / (w - 1) - t[1]) ** 2) / (0.1 * t[2] + 1e-5))
                          for j in range(w)] for i in range(h)])
        pa = softmax(mlp(sd, "classifier_att", (amap[None] * fc).sum((1, 2))))
        np.testing.assert_allclose(got["output"][n].numpy(), p, rtol=1e-10)
        np.testing.assert_allclose(got["attention_probabilities"][n].numpy(), pa, rtol=1e-10)
        np.testing.assert_allclose(got["attention_map"][n].numpy(), amap, rtol=1e-10, atol=1e-14)
        probs.append(p)
    probs = np.stack(probs)
    target = probs ** 2 / (probs.sum(0) + 1e-5)
    target /= target.sum(1, keepdims=True) + 1e-5
    np.testing.assert_allclose(got["attention_target"].numpy(), target, rtol=1e-10)
    assert (got["labels"].numpy() == probs.argmax(1)).all()


def test_assignments_are_distributions():
    out = runtime.run(MECH, {"features": torch.randn(5, 8, 6, 6)}, {"clusters": 4})
    torch.testing.assert_close(out["output"].sum(1), torch.ones(5))
    torch.testing.assert_close(out["attention_probabilities"].sum(1), torch.ones(5))
