"""CSL-JSON export validated against the CSL-JSON schema (the item part of csl-data.json)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

SCHEMA = json.loads((Path(__file__).parent / "csl-data.schema.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def items(client) -> list[dict]:
    r = client.get("/export", headers={"Accept": "application/vnd.citationstyles.csl+json"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.citationstyles.csl+json"
    return r.json()


def test_library_validates_against_the_csl_schema(items):
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(items, SCHEMA)
    assert len(items) == len({i["id"] for i in items})


def test_schema_rejects_what_it_should():
    bad = [{"id": "x", "type": "conference-paper"}, {"id": "x", "type": "book", "author": [{"famly": "Li"}]},
           {"id": "x", "type": "book", "issued": {"date-parts": [[2018, 9, 1, 5]]}}, {"type": "book"},
           {"id": "x", "type": "book", "booktitle": "not a CSL variable"}]
    for item in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate([item], SCHEMA)


def test_items_carry_the_reference(items):
    by_id = {i["id"]: i for i in items}
    cbam = by_id["wooCBAMConvolutionalBlock2018"]
    assert cbam["type"] == "paper-conference"
    assert cbam["title"] == "CBAM: Convolutional Block Attention Module"  # braces are BibTeX markup only
    assert cbam["author"][2] == {"family": "Lee", "given": "Joon-Young"}
    assert cbam["container-title"] == "Proceedings of the European Conference on Computer Vision (ECCV)"
    assert cbam["issued"] == {"date-parts": [[2018, 9]]}
    assert cbam["page"] == "3-19"
    ema = by_id["liExpectationMaximizationAttentionNetworks2019"]
    assert ema["note"] == "Citation Key: liExpectationMaximizationAttentionNetworks2019\narXiv: 1907.13426"
    assert cbam["citation-key"] == "wooCBAMConvolutionalBlock2018"
    transformer = by_id["vaswaniAttentionAllYou2017"]
    assert transformer["author"][6] == {"family": "Kaiser", "given": "Łukasz"}
    assert transformer["URL"] == "https://arxiv.org/abs/1706.03762"  # no page of its own: the arXiv record
    axial = by_id["wangAxialDeepLabStandAloneAxialAttention2020"]
    assert axial["DOI"] == "10.1007/978-3-030-58548-8_7"
    assert axial["collection-title"] == "Lecture Notes in Computer Science"
    boosted = by_id["chenBoostedAttentionLeveraging2018"]
    assert boosted["URL"] == "https://www-users.cs.umn.edu/~qzhao/captioning.html"
    preprint = by_id["sindagiInverseAttentionGuided2019"]
    assert (preprint["type"], preprint["publisher"], preprint["number"]) == ("article", "arXiv", "arXiv:1907.01193")
    assert "container-title" not in preprint
    survey = by_id["hassaninVisualAttentionMethods2022"]
    assert (survey["type"], survey["container-title"]) == ("article-journal", "Information Fusion")
    apcnn = by_id["dingAPCNNWeaklySupervised2021"]
    assert (apcnn["type"], apcnn["container-title"], apcnn["volume"], apcnn["page"]) == (
        "article-journal", "IEEE Transactions on Image Processing", "30", "2826-2836")


def test_include_survey_switch(client):
    ids = {i["id"] for i in client.get("/export", params={"format": "csl-json", "include_survey": "false"}).json()}
    assert "hassaninVisualAttentionMethods2022" not in ids and "wooCBAMConvolutionalBlock2018" in ids
    some = client.get("/export", params={"format": "csl-json", "subcategory": "channel"}).json()
    some_ids = {i["id"] for i in some}
    assert "hassaninVisualAttentionMethods2022" in some_ids
    channel = client.get("/techniques", params={"subcategory": "channel", "fields": "citation", "limit": 100}).json()
    assert some_ids == {t["citation"]["citekey"] for t in channel["items"]} | {"hassaninVisualAttentionMethods2022"}
