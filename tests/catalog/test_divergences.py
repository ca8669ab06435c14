"""Paper-vs-released-code differences: the data rules, the hyper-parameters they name, and how the API,
the catalogue function and the technique page show them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlmodel import Session

from service.catalog.divergences import divergences_for
from service.catalog.loader import Divergence, load_catalog
from service.catalog.sync import sync
from service.db import make_engine
from service.mechanisms import registry
from service.migrate import upgrade
from service.models import Technique
from service.settings import REPO_DATA

CATALOG = load_catalog(Path(REPO_DATA))
WITH_DIVERGENCES = sorted(slug for slug, t in CATALOG.techniques.items() if t.divergences)

GOOD = {"what": "Channel energy", "paper": "softmax(E)", "released_code": "softmax(-E)",
        "evidence": "https://github.com/o/r/blob/" + "a" * 40 + "/x.py"}


def test_known_differences_are_recorded():
    for slug in ("dual-attention", "permutation-invariant-attention", "gatcluster", "efficient-channel-attention",
                 "non-local-sparse-attention", "deformable-attention-transformer", "axial-attention", "perceiver",
                 "slot-attention", "stacked-cross-attention", "self-supervised-gaussian-attention"):
        assert CATALOG.techniques[slug].divergences, slug


@pytest.mark.parametrize("evidence", ["https://github.com/o/r/blob/main/x.py", "https://github.com/o/r",
                                      "https://github.com/o/r/blob/abc123/x.py"])
def test_evidence_must_be_pinned_to_a_commit(evidence):
    Divergence.model_validate(GOOD)
    with pytest.raises(ValidationError, match="commit"):
        Divergence.model_validate({**GOOD, "evidence": evidence})


def test_unknown_keys_and_short_texts_are_refused():
    with pytest.raises(ValidationError):
        Divergence.model_validate({**GOOD, "code": "x"})
    with pytest.raises(ValidationError):
        Divergence.model_validate({**GOOD, "paper": ""})


@pytest.mark.parametrize("slug", WITH_DIVERGENCES)
def test_reproduce_with_names_real_non_default_settings(slug):
    mech = registry.get(slug)
    for d in CATALOG.techniques[slug].divergences:
        if not d.reproduce_with:
            continue
        assert mech is not None, f"{slug} names hyper-parameters but has no implementation"
        resolved = mech.resolve_params(d.reproduce_with)          # raises on unknown names or bad values
        defaults = mech.defaults()
        assert any(resolved[k] != defaults[k] for k in d.reproduce_with), f"{slug}: the setting is the default"


def test_api_and_catalogue_function_return_the_records(client):
    r = client.get("/techniques/dual-attention")
    assert r.status_code == 200
    got = r.json()["divergences"]
    want = [d.model_dump(mode="json", exclude_none=True) for d in CATALOG.techniques["dual-attention"].divergences]
    assert got == want
    assert got[0]["reproduce_with"] == {"cam_energy": "released"}
    only = client.get("/techniques/perceiver", params={"fields": "slug,divergences"}).json()
    assert set(only) == {"slug", "divergences"} and only["divergences"][0]["reproduce_with"] == {"feed_forward": "geglu"}
    with Session(client.app.state.engine) as session:
        assert divergences_for(session, "dual-attention") == want
        assert divergences_for(session, "squeeze-and-excitation") == []
        assert divergences_for(session, "no-such-technique") == []


def test_technique_page_shows_them(client):
    r = client.get("/t/stacked-cross-attention")
    assert r.status_code == 200
    html = r.text
    assert "Paper and released code" in html
    d = CATALOG.techniques["stacked-cross-attention"].divergences[0]
    assert str(d.evidence) in html
    assert "clip=&#34;leaky_relu&#34;" in html or 'clip="leaky_relu"' in html
    assert "Paper and released code" not in client.get("/t/squeeze-and-excitation").text
    # records without a hyper-parameter switch render too
    page = client.get("/t/axial-attention")
    assert page.status_code == 200 and "Paper and released code" in page.text and "Reproduce with" not in page.text


def test_sync_stores_them_and_keeps_them_current_on_records_edited_through_the_api(fresh_settings):
    engine = make_engine(fresh_settings)
    upgrade(engine)
    try:
        sync(engine, Path(REPO_DATA))
        with Session(engine) as session:
            t = session.get(Technique, "slot-attention")
            assert t.divergences == [d.model_dump(mode="json", exclude_none=True)
                                     for d in CATALOG.techniques["slot-attention"].divergences]
            t.edited_via_api = True          # texts edited through the API; divergences are not editable there
            t.summary = "x" * 90
            t.divergences = []
            session.commit()
        report = sync(engine, Path(REPO_DATA))
        assert "slot-attention" in report.kept_edited
        with Session(engine) as session:
            t = session.get(Technique, "slot-attention")
            assert t.summary == "x" * 90 and divergences_for(session, "slot-attention") == [
                d.model_dump(mode="json", exclude_none=True) for d in CATALOG.techniques["slot-attention"].divergences]
    finally:
        engine.dispose()
