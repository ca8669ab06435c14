"""HOA against a NumPy evaluation of the polynomial with explicit outer-product weight tensors: for
order r, W^r = sum_d alpha^r_{:,d} (x) u^r_{1,d} (x) ... (x) u^r_{r,d} contracted with x r times (the
ReLU is applied per rank-1 component d, as in the module's relu(z^r))."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.mechanisms import registry, runtime

MECH = registry.get("high-order-attention")


def numpy_hoa(x, sd, order):
    b, c, h, w = x.shape
    vecs = x.transpose(0, 2, 3, 1).reshape(-1, c)              # one local descriptor per position
    logits = np.zeros_like(vecs)
    for r in range(1, order + 1):
        us = [sd[f"u.{r - 1}.{k}.weight"][:, :, 0, 0] for k in range(r)]   # each [D, C]
        alpha = sd[f"alpha.{r - 1}.weight"][:, :, 0, 0]                     # [C, D]
        for p, v in enumerate(vecs):
            for d in range(us[0].shape[0]):
                # <u_1d (x) ... (x) u_rd, v (x) ... (x) v> built as an explicit order-r tensor
                t = us[0][d]
                xt = v
                for k in range(1, r):
                    t = np.multiply.outer(t, us[k][d])
                    xt = np.multiply.outer(xt, v)
                logits[p] += alpha[:, d] * max((t * xt).sum(), 0.0)
    a = 1.0 / (1.0 + np.exp(-logits))
    a = a.reshape(b, h, w, c).transpose(0, 3, 1, 2)
    return x * a, a


@pytest.mark.parametrize("order,reduction", [(3, 2), (1, 1), (4, 4)])
def test_matches_numpy_polynomial(order, reduction):
    x = torch.randn(2, 8, 3, 2, dtype=torch.float64)
    resolved = MECH.validate({"x": tuple(x.shape)}, {"order": order, "reduction": reduction})
    module = runtime.build_module(MECH, {"x": x.shape}, resolved, seed=9, dtype=torch.float64)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    want_out, want_a = numpy_hoa(x.numpy(), sd, order)
    got = runtime.forward(MECH, module, {"x": x})
    np.testing.assert_allclose(got["attention"].numpy(), want_a, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(got["output"].numpy(), want_out, rtol=1e-11, atol=1e-12)


def test_order_r_term_is_homogeneous_of_degree_r():
    """Scaling x by t scales each order-r logit term by t^r (pure polynomial, no bias)."""
    x = torch.randn(1, 8, 2, 2, dtype=torch.float64)
    resolved = MECH.validate({"x": (1, 8, 2, 2)}, {"order": 3})
    m = runtime.build_module(MECH, {"x": x.shape}, resolved, seed=1, dtype=torch.float64)
    with torch.no_grad():
        for r in (0, 1):              # keep only the order-3 branch
            m.alpha[r].weight.zero_()
        lg1 = torch.logit(m(x)["attention"])
        lg2 = torch.logit(m(2 * x)["attention"])
    torch.testing.assert_close(lg2, 8 * lg1, rtol=1e-7, atol=1e-9)


def test_attention_in_unit_interval():
    out = runtime.run(MECH, {"x": torch.randn(2, 16, 4, 4) * 0.3}, seed=0)
    assert ((out["attention"] > 0) & (out["attention"] < 1)).all()
