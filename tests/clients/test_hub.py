"""torch.hub: the entry points in hubconf.py, on a clean clone, against the run path's own modules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from service import hub
from service.mechanisms import registry, runtime

REPO = Path(__file__).resolve().parents[2]


def _shape_sets(mech):
    return [dict(mech.example_shapes), *[dict(s) for s in mech.test_shapes]]


@pytest.mark.parametrize("slug", sorted(registry.all_mechanisms()))
def test_entry_point_builds_the_run_modules_from_the_sizes_it_asks_for(slug):
    """Given only the sizes the construction reads, the module equals the one the run API builds for the
    full input shapes: the sizes it leaves free really are free."""
    mech = registry.get(slug)
    needed = hub.build_dims(slug)
    dims = {spec.name: spec.dims for spec in mech.inputs}
    for shapes in _shape_sets(mech):
        sizes = {}
        for name, shape in shapes.items():
            sizes.update({sym: n for sym, n in zip(dims[name], shape, strict=True) if sym in needed})
        gen = torch.Generator().manual_seed(7)
        inputs = {name: torch.randn(shape, generator=gen) for name, shape in shapes.items()}
        module = hub.entry_points()[hub.entry_name(slug)](seed=3, **sizes)
        got = runtime.forward(mech, module, inputs, seed=3)
        want = runtime.run(mech, inputs, seed=3)
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=f"{slug} {shapes} {key}")


def test_entry_points_refuse_what_they_cannot_build_with_a_reason():
    cbam = hub.entry_points()["cbam"]
    with pytest.raises(TypeError, match=r"channels or C="):
        cbam()
    with pytest.raises(TypeError, match=r"unexpected keyword.*'colour'"):
        cbam(channels=8, colour=1)
    with pytest.raises(ValueError, match="positive integer"):
        cbam(channels=0)
    with pytest.raises(ValueError, match="smaller than reduction"):
        cbam(channels=4, reduction=8)
    with pytest.raises(ValueError, match="reduction must be a number"):
        cbam(channels=8, reduction="8")
    with pytest.raises(ValueError, match="no trained weights"):
        cbam(channels=8, pretrained=True)
    with pytest.raises(ValueError, match="disagrees"):
        cbam(channels=8, C=16)
    with pytest.raises(TypeError, match="keyword arguments only"):
        cbam(8)
    # a constraint on a size that was not given says which default it was checked with
    with pytest.raises(ValueError, match=r"taken from the example input.*tokens="):
        hub.entry_points()["clustered_attention"](dim=32, clusters=200)
    assert isinstance(hub.entry_points()["clustered_attention"](dim=32, clusters=200, tokens=256), torch.nn.Module)


def test_hub_on_a_clean_clone(tmp_path):
    """torch.hub.load(..., source="local") on a fresh git clone, and torch.hub.list / help in the GitHub form
    served from torch.hub's cache directory (the clone stands in for the downloaded archive)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    hub_dir = tmp_path / "torch-home" / "hub"
    hub_dir.mkdir(parents=True)
    (hub_dir / "atlas_attention-atlas_main").symlink_to(clone)
    x = torch.randn(2, 64, 5, 6, generator=torch.Generator().manual_seed(1))
    save_file({"x": x}, tmp_path / "x.safetensors")
    script = textwrap.dedent(f"""
        import json, sys, torch
        from safetensors.torch import load_file, save_file
        torch.hub.set_dir({str(hub_dir)!r})
        cbam = torch.hub.load({str(clone)!r}, "cbam", channels=64, reduction=8, seed=5, source="local")
        out = cbam(**load_file("x.safetensors"))
        save_file({{k: v.contiguous() for k, v in out.items()}}, "out.safetensors")
        import service
        names = torch.hub.list("atlas/attention-atlas:main", trust_repo=True, verbose=False)
        doc = torch.hub.help("atlas/attention-atlas:main", "squeeze_and_excitation", trust_repo=True)
        json.dump({{"service": service.__file__, "names": names, "doc": doc,
                    "class": type(cbam).__name__, "training": cbam.training}}, open("facts.json", "w"))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TORCH_HOME")}
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, timeout=300)
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert Path(facts["service"]).resolve().is_relative_to(clone.resolve())  # the clone's code, not this tree's
    assert sorted(facts["names"]) == sorted(s.replace("-", "_") for s in registry.all_mechanisms())
    assert all(n.isidentifier() for n in facts["names"])
    doc = facts["doc"]
    assert "channels or C" in doc and "reduction: int = 16" in doc
    assert "Shapes: x [B, C, H, W] -> output [B, C, H, W]" in doc  # the module's equations and shapes
    assert facts["class"] == "CBAM" and facts["training"] is False
    got = load_file(tmp_path / "out.safetensors")
    want = runtime.run(registry.get("cbam"), {"x": x}, {"reduction": 8}, seed=5)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
