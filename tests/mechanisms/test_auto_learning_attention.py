"""AutoLA HOGA against a functional re-implementation written node by node (hard-wired DAG, F.conv2d with
the state_dict weights), and against the generic properties of the gates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from service.mechanisms import registry, runtime
from tests.mechanisms.helpers import randomise_batchnorm

MECH = registry.get("auto-learning-attention")


def bn(x, sd, p, eps=1e-5):
    sh = (1, -1, 1, 1)
    return (x - sd[p + ".running_mean"].view(sh)) / torch.sqrt(sd[p + ".running_var"].view(sh) + eps) \
        * sd[p + ".weight"].view(sh) + sd[p + ".bias"].view(sh)


def se(y, sd, p):
    s = torch.sigmoid(torch.relu(y.mean(dim=(2, 3)) @ sd[p + ".fc1.weight"].T) @ sd[p + ".fc2.weight"].T)
    return y * s[:, :, None, None], s


def sep_stack(y, sd, p):
    c = y.shape[1]
    y = F.conv2d(y, sd[p + ".0.weight"], padding=1, groups=c)
    y = torch.relu(bn(F.conv2d(y, sd[p + ".1.weight"]), sd, p + ".2"))
    y = F.conv2d(y, sd[p + ".4.weight"], padding=1, groups=c)
    return bn(F.conv2d(y, sd[p + ".5.weight"]), sd, p + ".6")


def pool2(y):
    return torch.cat([y.max(dim=1, keepdim=True).values, y.mean(dim=1, keepdim=True)], dim=1)


def sep_gate(y, sd, p):
    return y * torch.sigmoid(sep_stack(y, sd, p + ".op"))


def dil_gate(y, sd, p):
    t = F.conv2d(y, sd[p + ".op.0.weight"], padding=2, dilation=2, groups=y.shape[1])
    return y * torch.sigmoid(bn(F.conv2d(t, sd[p + ".op.1.weight"]), sd, p + ".op.2"))


def spatial_sep(y, sd, p):
    m = torch.sigmoid(sep_stack(pool2(y), sd, p + ".op"))
    return y * m, m


def cbam(y, sd, p):
    def mlp(v):
        return torch.relu(v @ sd[p + ".fc1.weight"].T + sd[p + ".fc1.bias"]) @ sd[p + ".fc2.weight"].T \
            + sd[p + ".fc2.bias"]
    y = y * torch.sigmoid(mlp(y.mean(dim=(2, 3))) + mlp(y.amax(dim=(2, 3))))[:, :, None, None]
    m = torch.sigmoid(bn(F.conv2d(pool2(y), sd[p + ".conv.weight"], padding=3), sd, p + ".bn"))
    return y * m, m


def reference(x, sd):
    x1, x2, x3, x4 = torch.chunk(x, 4, dim=1)
    n1 = x1
    s2, m2 = spatial_sep(x2, sd, "edges.1.0")
    n2 = s2 + sep_gate(n1, sd, "edges.1.1")
    c3, m3 = cbam(x3, sd, "edges.2.0")
    n3 = c3 + n2 + sep_gate(n1, sd, "edges.2.2")
    n4 = sep_gate(x4, sd, "edges.3.0") + n1 + sep_gate(n3, sd, "edges.3.2") + dil_gate(n2, sd, "edges.3.3")
    summed, gw = se(x1 + x2 + x3 + x4, sd, "group_se")
    z = torch.cat([n1, n2, n3, n4, summed], dim=1)
    z = torch.relu(bn(F.conv2d(z, sd["channel_back.0.weight"]), sd, "channel_back.1"))
    z = bn(F.conv2d(z, sd["channel_back.3.weight"]), sd, "channel_back.4")
    out, cw = se(z + x, sd, "out_se")
    return out, cw, gw, torch.cat([m2, m3], dim=1)


@pytest.mark.parametrize("shape", [(2, 32, 6, 5), (1, 64, 3, 7)])
def test_matches_functional_reference(shape):
    module = runtime.build_module(MECH, {"x": shape}, {}, seed=21, dtype=torch.float64)
    randomise_batchnorm(module, 2)
    x = torch.randn(*shape, dtype=torch.float64)
    want = reference(x, module.state_dict())
    got = runtime.forward(MECH, module, {"x": x})
    for name, w in zip(("output", "channel_weights", "group_weights", "spatial_maps"), want, strict=True):
        torch.testing.assert_close(got[name], w, rtol=1e-11, atol=1e-12)


def test_gates_in_unit_interval_and_rejects_small_width():
    out = runtime.run(MECH, {"x": torch.randn(2, 32, 5, 5)}, seed=0)
    for k in ("channel_weights", "group_weights", "spatial_maps"):
        assert ((out[k] > 0) & (out[k] < 1)).all()
    with pytest.raises(Exception, match="multiple of 4"):
        MECH.validate({"x": (1, 30, 4, 4)})
