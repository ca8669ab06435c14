"""Properties every registered mechanism must have, checked over the whole registry."""

from __future__ import annotations

import pytest
import torch

from service.mechanisms import registry, runtime
from service.mechanisms.base import MechanismInputError

MECHS = sorted(registry.all_mechanisms())


def _inputs(mech, shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(*shape, generator=g) for name, shape in shapes.items()}


@pytest.mark.parametrize("slug", MECHS)
def test_shapes_over_several_sizes(slug):
    mech = registry.get(slug)
    for shapes in (mech.example_shapes, *mech.test_shapes):
        out = runtime.run(mech, _inputs(mech, shapes), seed=1)
        sizes = mech.bind_dims(shapes)
        assert list(out)[0] == "output"
        declared = {o.name: o for o in mech.outputs}
        assert set(out) <= set(declared), f"undeclared outputs {set(out) - set(declared)}"
        for name, tensor in out.items():
            dims = declared[name].dims
            assert tensor.dim() == len(dims), (name, tensor.shape, dims)
            for sym, n in zip(dims, tensor.shape, strict=True):
                if sym in sizes:
                    assert n == sizes[sym], (name, sym, tensor.shape, shapes)
                elif sym.isdigit():
                    assert n == int(sym)
            if tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), name


@pytest.mark.parametrize("slug", MECHS)
def test_same_seed_same_result_other_seed_other_weights(slug):
    mech = registry.get(slug)
    x = _inputs(mech, mech.example_shapes)
    a = runtime.run(mech, x, seed=7)
    b = runtime.run(mech, x, seed=7)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    shapes = mech.example_shapes
    params = mech.defaults()
    m1 = runtime.build_module(mech, shapes, params, seed=1).state_dict()
    m2 = runtime.build_module(mech, shapes, params, seed=2).state_dict()
    learnable = [k for k, v in m1.items() if v.is_floating_point() and v.numel() > 1 and v.std() > 0]
    assert all(not torch.equal(m1[k], m2[k]) for k in learnable)


@pytest.mark.parametrize("slug", MECHS)
def test_published_parameter_shapes_match_and_weights_round_trip(slug):
    mech = registry.get(slug)
    params = mech.defaults()
    published = runtime.parameter_shapes(mech, mech.example_shapes, params)
    module = runtime.build_module(mech, mech.example_shapes, params, seed=3)
    assert published == {k: list(v.shape) for k, v in module.state_dict().items()}
    x = _inputs(mech, mech.example_shapes)
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    a = runtime.run(mech, x, seed=3)
    b = runtime.run(mech, x, seed=99, weights=weights) if not mech.stochastic else None
    if b is not None:
        for k in a:
            torch.testing.assert_close(a[k], b[k])
    if weights:
        name = sorted(weights)[0]
        bad = dict(weights)
        bad[name] = torch.zeros(*(s + 1 for s in weights[name].shape))
        with pytest.raises(MechanismInputError, match=name):
            runtime.run(mech, x, weights=bad)


@pytest.mark.parametrize("slug", MECHS)
def test_rejects_wrong_rank_and_unknown_hyperparameter(slug):
    mech = registry.get(slug)
    first = mech.inputs[0]
    shapes = dict(mech.example_shapes)
    shapes[first.name] = shapes[first.name] + (1,)
    with pytest.raises(MechanismInputError):
        mech.validate(shapes)
    with pytest.raises(MechanismInputError, match="unknown hyper-parameter"):
        mech.validate(mech.example_shapes, {"no_such_parameter": 1})


@pytest.mark.parametrize("slug", MECHS)
def test_float64_matches_float32(slug):
    mech = registry.get(slug)
    x = _inputs(mech, mech.example_shapes)
    a = runtime.run(mech, x, seed=5, dtype=torch.float32)
    b = runtime.run(mech, x, seed=5, dtype=torch.float64)
    torch.testing.assert_close(a["output"].double(), b["output"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("slug", MECHS)
def test_output_without_weights_is_the_same(slug):
    """A fused path taken when attention weights are not requested must give the same output."""
    mech = registry.get(slug)
    x = _inputs(mech, mech.example_shapes)
    a = runtime.run(mech, x, seed=5)
    b = runtime.run(mech, x, seed=5, need_weights=False)
    torch.testing.assert_close(a["output"], b["output"], rtol=1e-4, atol=1e-5)
