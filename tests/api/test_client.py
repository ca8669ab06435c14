"""The typed client against the real app."""

from __future__ import annotations

import pytest
import torch

from service.client import AtlasClient, AtlasError
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
