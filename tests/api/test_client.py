"""The typed client against the real app."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.client import AtlasClient, AtlasError, RunResult
from service.mechanisms import registry, runtime


@pytest.fixture(scope="module")
def atlas(client):
    return AtlasClient(http=client)


def test_iterates_every_page(atlas, client):
    slugs = [t["slug"] for t in atlas.techniques(page_size=7, sort="slug")]
    assert slugs == sorted(slugs) and len(slugs) == client.get("/techniques").json()["total"]
    channel = list(atlas.techniques(subcategory="channel"))
    assert channel and all(t["subcategory"]["id"] == "channel" or "channel" in [a["id"] for a in t["also_in"]]
                           for t in channel)


def test_paging_helpers(atlas, client):
    pages = list(atlas.pages(page_size=5, sort="-year", fields=["slug", "year"]))
    everything = client.get("/techniques", params={"limit": 100, "sort": "-year", "fields": "slug,year"}).json()
    assert [t["slug"] for p in pages for t in p.items] == [t["slug"] for t in everything["items"]]
    assert all(len(p.items) == 5 for p in pages[:-1]) and pages[-1].next_cursor is None
    assert {p.total for p in pages} == {everything["total"]}
    assert set(pages[0].items[0]) == {"slug", "year"}
    seg = client.get("/techniques", params={"application": "semantic-segmentation"}).json()["total"]
    assert atlas.count(application="semantic-segmentation") == seg
    first = atlas.page(limit=3, q="attention")
    assert len(first.items) == 3 and first.next_cursor
    assert atlas.page(limit=3, q="attention", cursor=first.next_cursor).items[0] not in first.items


def test_citations(atlas, client):
    bib = atlas.citation("cbam", "bibtex")
    assert bib == client.get("/techniques/cbam/citation", params={"format": "bibtex"}).text and "@" in bib
    exported = atlas.export("bibtex", subcategory="channel", include_survey="false")
    assert exported == client.get("/export", params={"format": "bibtex", "subcategory": "channel",
                                                     "include_survey": "false"}).text
    assert exported.count("\n@") + exported.startswith("@") >= atlas.count(subcategory="channel") > 0
    assert atlas.note("cbam").startswith("---")


def test_run_binary_round_trip_and_errors(atlas):
    x = torch.randn(2, 16, 5, 5)
    out = atlas.run("squeeze-and-excitation", {"x": x}, hyperparameters={"reduction": 4}, seed=9)
    want = runtime.run(registry.get("squeeze-and-excitation"), {"x": x}, {"reduction": 4}, seed=9)
    torch.testing.assert_close(out["output"], want["output"])
    assert atlas.last_run["technique"] == "squeeze-and-excitation" and atlas.last_run["seed"] == 9
    with pytest.raises(AtlasError) as info:
        atlas.run("squeeze-and-excitation", {"x": torch.randn(2, 16, 5)})
    assert info.value.status == 422 and "rank" in info.value.message
    with pytest.raises(AtlasError) as info:
        atlas.technique("squeeze-excitation")
    assert info.value.status == 404 and "squeeze-and-excitation" in info.value.details["did_you_mean"]
    with pytest.raises(AtlasError) as info:
        atlas.run("cbam", x, reductio=4)
    assert info.value.status == 422 and "reductio" in info.value.message


def test_run_numpy_in_numpy_out(atlas):
    x = np.random.default_rng(0).standard_normal((2, 16, 6, 5)).astype(np.float32)
    out = atlas.run("cbam", x, reduction=8, seed=4)  # one array: the technique's first input
    assert isinstance(out, RunResult) and all(isinstance(v, np.ndarray) for v in out.values())
    want = runtime.run(registry.get("cbam"), {"x": torch.from_numpy(x)}, {"reduction": 8}, seed=4)
    assert list(out)[0] == "output" and set(out) == set(want)
    for k in want:
        assert out[k].dtype == np.float32 and out[k].shape == tuple(want[k].shape)
        np.testing.assert_allclose(out[k], want[k].numpy(), rtol=1e-6, atol=1e-6)
    assert out.facts["hyperparameters"]["reduction"] == 8 and set(out.attention) == {"channel_weights", "spatial_map"}
    assert out.output is out["output"]


def test_run_keeps_the_precision_and_kind_of_the_inputs(atlas):
    x64 = np.random.default_rng(1).standard_normal((1, 8, 4, 4))
    out = atlas.run("squeeze-and-excitation", x64, reduction=2, return_attention=False)
    assert out["output"].dtype == np.float64 and list(out) == ["output"]
    want = runtime.run(registry.get("squeeze-and-excitation"), {"x": torch.from_numpy(x64)}, {"reduction": 2},
                       dtype=torch.float64)
    np.testing.assert_allclose(out["output"], want["output"].numpy(), rtol=1e-12, atol=1e-12)
    # bfloat16 comes back to NumPy as float32 holding exactly the bfloat16 values
    out = atlas.run("squeeze-and-excitation", x64.astype(np.float32), reduction=2, dtype="bfloat16")
    want = runtime.run(registry.get("squeeze-and-excitation"), {"x": torch.from_numpy(x64).float()}, {"reduction": 2},
                       dtype=torch.bfloat16)
    assert out["output"].dtype == np.float32
    np.testing.assert_array_equal(out["output"], want["output"].float().numpy())
    xb = torch.from_numpy(x64).to(torch.bfloat16)
    out = atlas.run("squeeze-and-excitation", xb, reduction=2)
    assert out["output"].dtype == torch.bfloat16 and out.facts["dtype"] == "bfloat16"
    # several inputs in the technique's order
    q, s = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    got = atlas.run("cross-attention", (q, s))
    want = runtime.run(registry.get("cross-attention"), {"query": q, "support": s})
    torch.testing.assert_close(got["output"], want["output"])
