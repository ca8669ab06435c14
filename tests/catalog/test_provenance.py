"""Every bibliographic field rests on an admissible page: classified hosts only, a primary page per field."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from service.catalog.loader import CatalogInvalid, load_catalog
from service.catalog.provenance import classify, field_provenance, parse_rules

# Fields that identify a citation (title, authors, year, venue) cannot be left out of a BibTeX entry, so
# where no primary page was found for one it stays, listed here and reported by the API as unconfirmed.
# Every other field without a primary page has been removed from references.bib. This list may only
# shrink: the test fails when a listed field gains a primary source (take it off the list) and when a
# field not listed lacks one.
IDENTIFYING = {"title", "author", "year", "booktitle", "journal"}
UNCONFIRMED = {
    "faraziReciprocalAttentionFusion2018": {"author"},  # the first author's given names differ between records
    "huSPANSpatialPyramid2020": {"author"},
    "qinFcaNetFrequencyChannel2021": {"author", "booktitle", "year"},
    # an arXiv preprint: its arXiv id is what identifies it
    "sindagiInverseAttentionGuided2019": {"title", "author", "journal", "year", "eprint", "archiveprefix"},
    "vaswaniAttentionAllYou2017": {"author", "booktitle", "year"},
    "welleckSaliencybasedSequentialImage2017": {"author"},
    "zhangResNeStSplitAttentionNetworks2022": {"booktitle", "year"},
}

@pytest.fixture(scope="module")
def catalog(knowledge_dir):
    return load_catalog(knowledge_dir)


@pytest.fixture(scope="module")
def rules(knowledge_dir):
    parsed, problems = parse_rules(yaml.safe_load((knowledge_dir / "sources.yaml").read_text(encoding="utf-8")))
    assert problems == []
    return parsed


def _all_sources(knowledge_dir: Path) -> list[tuple[str, dict]]:
    """Every verification source in data/, read straight from the files (not through the loader)."""
    out: list[tuple[str, dict]] = []
    for path in sorted((knowledge_dir / "techniques").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        out += [(path.name, v) for v in doc.get("verification") or []]
        for alt in (doc.get("identification") or {}).get("alternatives", []):
            out += [(path.name, v) for v in alt.get("verification") or []]
    survey = yaml.safe_load((knowledge_dir / "survey-verification.yaml").read_text(encoding="utf-8"))
    out += [("survey-verification.yaml", v) for v in survey["verification"]]
    return out


def test_every_source_is_on_a_classified_host_and_states_its_kind(knowledge_dir, rules):
    sources = _all_sources(knowledge_dir)
    assert len(sources) >= 90
    for where, v in sources:
        c = classify(v["source"], rules)
        assert c.kind in ("primary", "secondary"), (where, v["source"], c)
        assert v["kind"] == c.kind, (where, v["source"])


def test_no_source_is_a_mirror_proxy_summary_site_or_bare_ip(knowledge_dir):
    banned = ("fdocuments", "pdfslide", "dokumen.tips", "vdocument", "studyres", "zbook", "http3.lol",
              "emergentmind", "tomesphere", "sotaverified", "liner.com", "summarizepaper", "arxivlens",
              "paperdigest", "scholarfeed", "githubissues")
    for where, v in _all_sources(knowledge_dir):
        host = urlsplit(v["source"]).hostname or ""
        assert not any(b in v["source"] for b in banned), (where, v["source"])
        assert not host.replace(".", "").isdigit(), (where, v["source"])


def test_every_field_has_a_primary_source_or_is_a_listed_identifying_field(catalog):
    cited = {t.citekey: [v.model_dump(mode="json") for v in t.verification] for t in catalog.techniques.values()}
    cited[catalog.taxonomy.survey_citekey] = catalog.survey_verification
    missing: dict[str, set[str]] = {}
    total = confirmed = 0
    for key, verification in cited.items():
        entry = catalog.references[key]
        # an independent reading: a field is confirmed when some primary source lists it
        primary = {f.lower() for v in verification if v["kind"] == "primary" for f in v["fields"]}
        for name in entry.raw_fields:
            total += 1
            if name in primary:
                confirmed += 1
            else:
                missing.setdefault(key, set()).add(name)
    assert missing == UNCONFIRMED
    preprint = {"eprint", "archiveprefix"}
    for key, fields in missing.items():
        allowed = IDENTIFYING | (preprint if catalog.references[key].fields.get("journal") == "arXiv preprint"
                                 else set())
        assert fields <= allowed, (key, fields - allowed)
    assert confirmed / total > 0.85, (confirmed, total)


def test_field_provenance_lists_sources_per_field_with_their_kind():
    verification = [
        {"source": "https://arxiv.org/abs/1", "kind": "primary", "fields": ["title", "eprint"]},
        {"source": "https://paperswithcode.com/x", "kind": "secondary", "fields": ["Title", "booktitle"]},
    ]
    got = field_provenance(["title", "booktitle", "pages"], verification)
    assert got["title"] == {"primary": True, "sources": [
        {"source": "https://arxiv.org/abs/1", "kind": "primary"},
        {"source": "https://paperswithcode.com/x", "kind": "secondary"}]}
    assert got["booktitle"]["primary"] is False and len(got["booktitle"]["sources"]) == 1
    assert got["pages"] == {"primary": False, "sources": []}


@pytest.mark.parametrize("url,kind", [
    ("https://arxiv.org/abs/1709.01507", "primary"),
    ("http://www.arxiv.org/abs/2010.10604", "primary"),  # www. is ignored
    ("https://github.com/juho-lee/set_transformer/blob/73432c6/README.md", "primary"),  # an authors' repository
    ("https://github.com/someone-else/set_transformer", "unknown"),  # not every repository
    ("https://github.com/juho-lee/set_transformer-fork", "unknown"),  # a prefix is a path segment, not a string
    ("https://paperswithcode.com/paper/x", "secondary"),
    ("https://tomesphere.com/paper/1907.01193", "blocked"),
    ("http://120.26.44.124:3004/details/1/1", "blocked"),
    ("https://example.org/paper", "unknown"),
])
def test_classification_of_hosts(rules, url, kind):
    assert classify(url, rules).kind == kind


def test_rules_file_problems_are_reported():
    _, problems = parse_rules({"primary": [{"match": "https://x.org"}, {"match": "www.y.org"}, {"nope": 1}],
                               "blocked": [{"match": "z.org"}, {"match": "z.org"}], "extra": []})
    text = " | ".join(problems)
    for part in ("without a scheme", "without 'www.'", "each rule is", "already listed", "unknown list"):
        assert part in text, (part, text)


@pytest.fixture
def data_copy(tmp_path, knowledge_dir):
    dest = tmp_path / "knowledge"
    shutil.copytree(knowledge_dir, dest)
    return dest


@pytest.mark.parametrize("source,kind,expected", [
    ("https://tomesphere.com/paper/1709.01507", "secondary", "blocked source"),
    ("http://120.26.44.124:3004/details/1", "secondary", "blocked source"),
    ("https://unheard-of.example/paper", "primary", "unknown host"),
    ("https://paperswithcode.com/paper/senet", "primary", "is secondary"),
])
def test_loader_refuses_blocked_unknown_and_misclassified_sources(data_copy, source, kind, expected):
    path = data_copy / "techniques" / "squeeze-and-excitation.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["verification"].append({"source": source, "kind": kind, "fields": ["title"]})
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(data_copy)
    messages = [str(p) for p in info.value.problems]
    assert any(expected in m and "squeeze-and-excitation.yaml" in m for m in messages), messages


def _refused(data_copy, slug, change) -> str:
    path = data_copy / "techniques" / f"{slug}.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(data_copy)
    return " | ".join(str(p) for p in info.value.problems)


def test_loader_refuses_unknown_field_names(data_copy):
    text = _refused(data_copy, "high-order-attention", lambda d: d["verification"][0]["fields"].append("venue"))
    assert "verification.0.fields" in text and "not BibTeX field names: ['venue']" in text


def test_loader_refuses_bad_identifications(data_copy):
    def change(doc):
        doc["identification"]["chosen"] = "someoneElse2020"
        doc["identification"]["alternatives"][0]["citekey"] = "notInTheBibliography2020"
    text = _refused(data_copy, "high-order-attention", change)
    assert "identification.chosen" in text
    assert "identification.alternatives.0.citekey: 'notInTheBibliography2020' is not in references.bib" in text
    assert "identification.alternatives.0.verification" in text  # a citekey needs its sources


def test_identifications_name_the_technique_citekey_and_carry_evidence(catalog):
    expected = {"attention-pyramid", "region-attention", "sequential-attention", "reciprocal-attention",
                "inverse-attention", "mirror-attention", "reverse-attention", "axial-attention",
                "high-order-attention", "self-supervised-gaussian-attention"}
    have = {s for s, t in catalog.techniques.items() if t.identification}
    assert have == expected
    for slug in have:
        ident = catalog.techniques[slug].identification
        assert ident.chosen == catalog.techniques[slug].citekey and ident.evidence, slug
    ho = catalog.techniques["high-order-attention"].identification
    assert any("MICCAI 2020" in a.paper for a in ho.alternatives)
    ra = catalog.techniques["region-attention"].identification
    assert any("Sun et al. 2021" in a.paper for a in ra.alternatives)
    # the two entries that share GATCluster cite one key, so a set of citations names it once
    assert (catalog.techniques["gatcluster"].citekey
            == catalog.techniques["self-supervised-gaussian-attention"].citekey)


def test_api_shows_sources_and_kind_per_field(client, knowledge_dir):
    doc = yaml.safe_load((knowledge_dir / "techniques" / "permutation-invariant-attention.yaml").read_text())
    body = client.get("/techniques/permutation-invariant-attention").json()
    prov = body["provenance"]
    assert prov["citekey"] == doc["citekey"] and prov["unconfirmed"] == []
    pages = prov["fields"]["pages"]
    assert pages["primary"] is True
    assert pages["sources"] == [{"source": v["source"], "kind": v["kind"]} for v in doc["verification"]
                                if "pages" in v["fields"]]
    assert set(prov["fields"]) == {"title", "author", "booktitle", "pages", "year"}
    assert body["identification"] is None

    inverse = client.get("/techniques/inverse-attention?fields=provenance,identification").json()
    assert {"title", "author", "year"} <= set(inverse["provenance"]["unconfirmed"])
    assert inverse["provenance"]["fields"]["title"] == {"sources": [], "primary": False}
    assert inverse["identification"]["chosen"] == "sindagiInverseAttentionGuided2019"
    assert inverse["identification"]["confidence"] == "medium" and inverse["identification"]["evidence"]

    high = client.get("/techniques/high-order-attention?fields=identification").json()["identification"]
    assert high["confidence"] == "low"
    assert any("MICCAI" in a["paper"] and a["citekey"] is None for a in high["alternatives"])


def test_openapi_documents_provenance_and_identification(client):
    op = client.get("/openapi.json").json()["paths"]["/techniques/{slug}"]["get"]
    assert "`provenance`" in op["description"] and "`identification`" in op["description"]
    example = op["responses"]["200"]["content"]["application/json"]["example"]
    assert example["provenance"]["fields"]["title"]["sources"][0]["kind"] == "primary"


def test_sync_stores_identification_in_its_own_column(fresh_settings, knowledge_dir):
    from sqlalchemy import inspect
    from sqlmodel import Session

    from service.catalog.sync import sync
    from service.db import make_engine
    from service.migrate import upgrade
    from service.models import Technique

    engine = make_engine(fresh_settings)
    try:
        upgrade(engine)
        assert "identification" in {c["name"] for c in inspect(engine).get_columns("techniques")}
        sync(engine, knowledge_dir)
        with Session(engine) as s:
            axial = s.get(Technique, "axial-attention")
            assert axial.identification["alternatives"][0]["paper"].startswith("Ho, Kalchbrenner")
            assert all("kind" in v for v in axial.verification)
            assert s.get(Technique, "cbam").identification is None
    finally:
        engine.dispose()


def test_technique_page_shows_kinds_and_identification(client):
    page = client.get("/t/high-order-attention").text
    assert "Identification (low confidence)" in page and "MICCAI 2020" in page
    assert "(primary)" in page
    assert "Identification (" not in client.get("/t/cbam").text
