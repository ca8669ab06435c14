"""DANet against an explicit-sum NumPy transcription of Eqs. 1-4, softmax properties, and the fused path."""

from __future__ import annotations

import numpy as np
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("dual-attention")


def numpy_danet(x, sd, cam_energy="paper"):
    bsz, c, h, w = x.shape
    n = h * w
    out, ss, xs = [], [], []
    for s_ in range(bsz):
        a = x[s_].reshape(c, n)                                            # A_i = a[:, i] (positions)
        bq = sd["conv_b.weight"][:, :, 0, 0] @ a + sd["conv_b.bias"][:, None]
        ck = sd["conv_c.weight"][:, :, 0, 0] @ a + sd["conv_c.bias"][:, None]
        d = sd["conv_d.weight"][:, :, 0, 0] @ a + sd["conv_d.bias"][:, None]
        s = np.zeros((n, n))
        for j in range(n):                                      # s_ji = softmax_i(B_i . C_j)
            e = np.array([bq[:, i] @ ck[:, j] for i in range(n)])
            e = np.exp(e - e.max())
            s[j] = e / e.sum()
        ep = sd["alpha"][0] * np.stack([sum(s[j, i] * d[:, i] for i in range(n)) for j in range(n)], axis=1) + a
        xc = np.zeros((c, c))
        for j in range(c):                                                 # x_ji over channels i
            e = np.array([a[i] @ a[j] for i in range(c)])
            if cam_energy == "released":                                   # softmax(max(E) - E)
                e = e.max() - e
            e = np.exp(e - e.max())
            xc[j] = e / e.sum()
        ec = sd["beta"][0] * np.stack([sum(xc[j, i] * a[i] for i in range(c)) for j in range(c)]) + a
        out.append((ep + ec).reshape(c, h, w))
        ss.append(s)
        xs.append(xc)
    return np.stack(out), np.stack(ss), np.stack(xs)


def _module(shape, params=None, seed=3):
    resolved = MECH.validate({"x": shape}, params or {})
    m = runtime.build_module(MECH, {"x": shape}, resolved, seed=seed, dtype=torch.float64)
    with torch.no_grad():                       # non-zero gains so both branches are exercised
        m.alpha.fill_(0.7)
        m.beta.fill_(-1.3)
    return m


def test_matches_numpy_equations():
    x = torch.randn(2, 16, 4, 3, dtype=torch.float64) * 0.5
    module = _module(tuple(x.shape))
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want = numpy_danet(x.numpy(), sd)
    got = runtime.forward(MECH, module, {"x": x})
    for name, w in zip(("output", "position_attention", "channel_attention"), want, strict=True):
        np.testing.assert_allclose(got[name].numpy(), w, rtol=1e-10, atol=1e-12)


def test_rows_sum_to_one_and_fused_path_agrees():
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64) * 0.3
    module = _module(tuple(x.shape), {"qk_reduction": 4})
    full = runtime.forward(MECH, module, {"x": x})
    fused = runtime.forward(MECH, module, {"x": x}, need_weights=False)
    assert set(fused) == {"output"}
    torch.testing.assert_close(fused["output"], full["output"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(full["position_attention"].sum(-1), torch.ones(2, 30, dtype=torch.float64))
    torch.testing.assert_close(full["channel_attention"].sum(-1), torch.ones(2, 16, dtype=torch.float64))


def test_paper_initialisation_is_identity_sum():
    x = torch.randn(1, 16, 3, 3)
    out = runtime.run(MECH, {"x": x}, seed=0)
    torch.testing.assert_close(out["output"], 2 * x)


def test_position_module_is_permutation_equivariant():
    """No positional terms: permuting the pixels permutes the output the same way."""
    x = torch.randn(1, 16, 4, 4, dtype=torch.float64) * 0.5
    module = _module(tuple(x.shape))
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    xp = x.flatten(2)[:, :, perm].reshape(1, 16, 4, 4)
    a = runtime.forward(MECH, module, {"x": x})["output"].flatten(2)[:, :, perm]
    b = runtime.forward(MECH, module, {"x": xp})["output"].flatten(2)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_released_cam_energy_matches_numpy_and_differs_from_eq_3():
    x = torch.randn(2, 16, 4, 3, dtype=torch.float64) * 0.5
    module = _module(tuple(x.shape), {"cam_energy": "released"})
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want = numpy_danet(x.numpy(), sd, cam_energy="released")
    got = runtime.forward(MECH, module, {"x": x})
    for name, w in zip(("output", "position_attention", "channel_attention"), want, strict=True):
        np.testing.assert_allclose(got[name].numpy(), w, rtol=1e-10, atol=1e-12)
    fused = runtime.forward(MECH, module, {"x": x}, need_weights=False)
    torch.testing.assert_close(fused["output"], got["output"], rtol=1e-10, atol=1e-12)
    paper = numpy_danet(x.numpy(), sd)[2]
    assert np.abs(paper - want[2]).max() > 0.1        # the two energies give different channel maps
    # the released energy favours the channels least similar to channel j: weight falls as A_j . A_i grows
    energy = x.flatten(2) @ x.flatten(2).transpose(1, 2)
    assert torch.equal(got["channel_attention"].argmin(-1), energy.argmax(-1))
    assert torch.equal(got["channel_attention"].argmax(-1), energy.argmin(-1))
