"""GAIN against an independent Grad-CAM computed with autograd (Li et al. CVPR 2018, Eqs. 1-5)."""

from __future__ import annotations

import torch

from service.mechanisms import registry, runtime

MECH = registry.get("guided-attention-inference")


def autograd_gain(image, sd, sigma, omega):
    """Eqs. 1-5 with the gradient of Eq. 1 taken by autograd, loops over the batch."""
    outs, atts, masks, erased_scores = [], [], [], []
    for b in range(image.shape[0]):
        x = image[b:b + 1]
        f = torch.relu(torch.nn.functional.conv2d(x, sd["conv.weight"], sd["conv.bias"], padding=1))
        f = f.detach().requires_grad_(True)
        s = f.mean(dim=(2, 3)) @ sd["fc.weight"].T + sd["fc.bias"]
        c = int(s.argmax())
        (grad,) = torch.autograd.grad(s[0, c], f)
        w = grad.mean(dim=(2, 3))[0]                                 # Eq. 1 GAP of the gradient
        a = torch.relu((w[:, None, None] * f.detach()[0]).sum(0))     # Eq. 2
        t = 1 / (1 + torch.exp(-omega * (a / a.max() - sigma)))       # Eq. 3 (normalised map)
        erased = x - t * x                                           # Eq. 4
        fe = torch.relu(torch.nn.functional.conv2d(erased, sd["conv.weight"], sd["conv.bias"], padding=1))
        se = fe.mean(dim=(2, 3)) @ sd["fc.weight"].T + sd["fc.bias"]
        outs.append(erased[0]), atts.append(a), masks.append(t), erased_scores.append(se[0, c])
    return torch.stack(outs), torch.stack(atts), torch.stack(masks), torch.stack(erased_scores)


def test_matches_autograd_grad_cam():
    image = torch.randn(3, 3, 6, 5, dtype=torch.float64)
    params = MECH.resolve_params({"features": 8, "classes": 5, "sigma": 0.4, "omega": 7.0})
    module = runtime.build_module(MECH, {"image": image.shape}, params, seed=4, dtype=torch.float64)
    sd = {k: v.detach().clone() for k, v in module.state_dict().items()}
    want = autograd_gain(image, sd, 0.4, 7.0)
    got = runtime.forward(MECH, module, {"image": image})
    for name, w in zip(("output", "attention", "mask", "erased_score"), want, strict=True):
        torch.testing.assert_close(got[name], w, rtol=1e-10, atol=1e-12)


def test_mask_in_unit_interval_and_erasure_keeps_unattended_pixels():
    image = torch.randn(2, 3, 8, 8)
    out = runtime.run(MECH, {"image": image}, seed=1)
    assert ((out["mask"] > 0) & (out["mask"] < 1)).all()
    assert (out["attention"] >= 0).all()
    torch.testing.assert_close(out["output"], image * (1 - out["mask"][:, None]))
    assert torch.equal(out["class_index"], out["logits"].argmax(1))
