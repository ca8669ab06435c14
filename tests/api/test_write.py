"""The write API through the real app, each test on its own freshly loaded SQLite database:
API-key authentication on every write route, BibTeX/RIS import (validated whole, nothing written on
failure) and PATCH of a technique's text fields (If-Match, search index, kept by a later sync)."""

from __future__ import annotations

import io
import sqlite3
from contextlib import redirect_stdout
from pathlib import Path

import bibtexparser
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import text
from sqlmodel import Session

from service import cli
from service.auth import hash_key
from service.catalog import sync as sync_module
from service.catalog.loader import load_catalog
from service.main import create_app
from service.models import Reference, Technique
from service.settings import REPO_DATA, Settings
from tests.conftest import make_settings

WRITE_KEY = "atlas_write-key-for-tests-0123456789abcdef"
READ_KEY = "atlas_read-key-for-tests-0123456789abcdef"
API_KEYS = f"editor:write:{hash_key(WRITE_KEY)},viewer:read:{hash_key(READ_KEY)}"
WRITE = {"Authorization": f"Bearer {WRITE_KEY}"}
BIB = {"Content-Type": "application/x-bibtex"}
RIS = {"Content-Type": "application/x-research-info-systems"}
MERGE = {"Content-Type": "application/merge-patch+json"}
SLUG = "squeeze-and-excitation"
SE_KEY = "huSqueezeandExcitationNetworks2018"  # in data/references.bib
# the run API computes and writes nothing; every other non-GET operation is a write
# runs write nothing; shared-memory regions are a per-process table for co-located clients, enabled by a setting
NOT_WRITES = {("post", "/run"), ("post", "/techniques/{slug}/run"), ("post", "/techniques/{slug}/run/shm"),
              ("post", "/shm/regions"), ("delete", "/shm/regions/{name}"),
              ("post", "/v2/models/{model_name}/infer"), ("post", "/v2/models/{model_name}/versions/{model_version}/infer"),
              ("post", "/v2/systemsharedmemory/region/{region_name}/register"),
              ("post", "/v2/systemsharedmemory/region/{region_name}/unregister"),
              ("post", "/v2/systemsharedmemory/unregister")}

GOOD_BIB = r"""
@inproceedings{kaiserNeuralGPUsLearn2016,
  title         = {Neural {GPUs} Learn Algorithms},
  author        = {Kaiser, {\L}ukasz and Sutskever, Ilya},
  booktitle     = {International Conference on Learning Representations ({ICLR})},
  month         = may,
  year          = {2016},
  eprint        = {1511.08228},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/1511.08228}
}

@article{schmidhuberLearningControlFastweight1992,
  title   = {Learning to Control Fast-Weight Memories: An Alternative to Dynamic Recurrent Networks},
  author  = {Schmidhuber, J{\"u}rgen},
  journal = {Neural Computation},
  volume  = {4},
  number  = {1},
  pages   = {131--139},
  year    = {1992},
  doi     = {10.1162/neco.1992.4.1.131}
}
"""

ITTI_RIS = """TY  - JOUR
TI  - A model of saliency-based visual attention for rapid scene analysis
AU  - Itti, Laurent
AU  - Koch, Christof
AU  - Niebur, Ernst
T2  - IEEE Transactions on Pattern Analysis and Machine Intelligence
VL  - 20
IS  - 11
SP  - 1254
EP  - 1259
DA  - 1998/11//
PY  - 1998
DO  - 10.1109/34.730558
ER  - 

TY  - JOUR
TI  - Learning to Control Fast-Weight Memories: An Alternative to Dynamic Recurrent Networks
AU  - Schmidhuber, Jürgen
T2  - Neural Computation
VL  - 4
IS  - 1
SP  - 131
EP  - 139
PY  - 1992
ER  - 
"""
# two versions of the SE paper whose Better BibTeX key is the one data/ already uses for the CVPR entry
SE_RIS = """TY  - CONF
TI  - Squeeze-and-Excitation Networks
AU  - Hu, Jie
AU  - Shen, Li
AU  - Sun, Gang
T2  - 2018 IEEE/CVF Conference on Computer Vision and Pattern Recognition
SP  - 7132
EP  - 7141
PY  - 2018
DO  - 10.1109/CVPR.2018.00745
ER  - 

TY  - JOUR
TI  - Squeeze-and-Excitation Networks
AU  - Hu, Jie
AU  - Shen, Li
AU  - Sun, Gang
T2  - arXiv preprint
PY  - 2018
UR  - https://arxiv.org/abs/1709.01507
ER  - 
"""


@pytest.fixture(scope="module", autouse=True)
def catalog_loaded_once():
    """data/ is parsed once for the module; every sync (app start, the sync test) uses that catalogue."""
    catalog = load_catalog(REPO_DATA)

    def cached(root: Path):
        return catalog if Path(root).resolve() == REPO_DATA.resolve() else load_catalog(root)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sync_module, "load_catalog", cached)
        yield


@pytest.fixture(scope="module")
def loaded_db(tmp_path_factory) -> Path:
    """A database migrated and loaded from data/ by the app's own lifespan, copied for every test."""
    tmp = tmp_path_factory.mktemp("loaded")
    with TestClient(create_app(make_settings(tmp, api_keys=API_KEYS))):
        pass
    return tmp / "atlas.db"


def _fresh_app(where: Path, loaded_db: Path, **overrides):
    """The real app on its own copy of the loaded database (SQLite's backup API: a consistent copy)."""
    where.mkdir(parents=True, exist_ok=True)
    src, dst = sqlite3.connect(loaded_db), sqlite3.connect(where / "atlas.db")
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return create_app(make_settings(where, **{"api_keys": API_KEYS, **overrides}))


@pytest.fixture
def client(tmp_path, loaded_db):
    with TestClient(_fresh_app(tmp_path, loaded_db), raise_server_exceptions=False) as c:
        yield c


def _count(client, table: str = "references") -> int:
    with client.app.state.engine.connect() as conn:
        return conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one()


def _ref(client, key: str) -> Reference | None:
    with Session(client.app.state.engine) as s:
        return s.get(Reference, key)


def _technique(client, slug: str = SLUG) -> Technique:
    with Session(client.app.state.engine) as s:
        return s.get(Technique, slug)


def _problems(resp) -> set[tuple[str | None, str | None]]:
    assert resp.status_code == 422, resp.text
    body = resp.json()["error"]
    assert body["code"] == "invalid" and "nothing was written" in body["message"]
    return {(p["key"], p["field"]) for p in body["details"]["problems"]}


def _write_requests():
    """A valid request for every write operation."""
    return {
        ("post", "/references"): dict(method="POST", url="/references", content=GOOD_BIB, headers=BIB),
        ("patch", "/techniques/{slug}"): dict(method="PATCH", url=f"/techniques/{SLUG}",
                                              json={"aliases": ["SE block", "SENet"]}, headers=MERGE),
    }


# ---------------------------------------------------------------------------------------------------
# authentication

def test_every_write_operation_is_listed_and_declares_bearer_auth(client):
    spec = client.get("/openapi.json").json()
    writes = {(m, p) for p, ops in spec["paths"].items() for m in ops if m != "get"} - NOT_WRITES
    secured = {(m, p) for p, ops in spec["paths"].items() for m, op in ops.items() if op.get("security")}
    assert writes == secured == set(_write_requests())
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


@pytest.mark.parametrize("route", sorted(_write_requests()))
def test_write_routes_refuse_missing_wrong_and_read_only_keys(client, route):
    req = _write_requests()[route]
    refs, before = _count(client), client.get(f"/techniques/{SLUG}").json()

    def send(auth: str | None):
        headers = dict(req["headers"], **({"Authorization": auth} if auth else {}))
        return client.request(req["method"], req["url"], content=req.get("content"), json=req.get("json"),
                              headers=headers)

    for auth, status in [(None, 401), ("Bearer not-a-key", 401), (f"Basic {WRITE_KEY}", 401),
                         (f"Bearer {READ_KEY}", 403)]:
        r = send(auth)
        assert r.status_code == status, (auth, r.text)
        assert r.json()["error"]["code"] == ("unauthorized" if status == 401 else "forbidden")
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert "invalid_token" in send("Bearer not-a-key").headers["www-authenticate"]
    assert "read-only" in send(f"Bearer {READ_KEY}").json()["error"]["message"]
    assert _count(client) == refs and client.get(f"/techniques/{SLUG}").json() == before, "a refused write wrote"

    assert send(f"Bearer {WRITE_KEY}").status_code == 200


def test_cli_key_works_and_a_server_without_keys_refuses(tmp_path, loaded_db):
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["keys", "new", "zotero-sync", "--role", "write"]) == 0
    lines = dict(line.split(":", 1) for line in out.getvalue().splitlines())
    key, entry = lines["key"].strip(), lines["setting"].strip()
    assert entry == f"zotero-sync:write:{hash_key(key)}" and key not in entry
    dry = dict(url="/references?dry_run=true", content=GOOD_BIB, headers={**BIB, "Authorization": f"Bearer {key}"})
    with TestClient(_fresh_app(tmp_path / "a", loaded_db, api_keys=entry)) as c:
        assert c.post(**dry).status_code == 200
    with TestClient(_fresh_app(tmp_path / "b", loaded_db, api_keys="")) as c:
        r = c.post(**dry)
        assert r.status_code == 401 and "no API keys" in r.json()["error"]["message"]


@pytest.mark.parametrize("bad", ["alice:admin:" + "0" * 64, "alice:write:not-a-hash", "alice:write",
                                 f"a:write:{'0' * 64},a:read:{'1' * 64}"])
def test_malformed_key_settings_are_refused_at_startup(bad):
    with pytest.raises(ValidationError, match="api_keys"):
        Settings(api_keys=bad)


# ---------------------------------------------------------------------------------------------------
# import

def test_import_good_bib_then_again_unchanged(client):
    before = _count(client)
    dry = client.post("/references?dry_run=true", content=GOOD_BIB, headers={**BIB, **WRITE})
    assert dry.json()["created"] == ["kaiserNeuralGPUsLearn2016", "schmidhuberLearningControlFastweight1992"]
    assert _count(client) == before

    r = client.post("/references", content=GOOD_BIB, headers={**BIB, **WRITE})
    assert r.status_code == 200, r.text
    assert r.json() == {"created": ["kaiserNeuralGPUsLearn2016", "schmidhuberLearningControlFastweight1992"],
                        "updated": [], "unchanged": [], "skipped": [], "dry_run": False}
    assert _count(client) == before + 2
    ref = _ref(client, "kaiserNeuralGPUsLearn2016")
    assert ref.source == "api" and ref.entry_type == "inproceedings" and ref.bibtex.startswith("@inproceedings{kaiser")
    assert ref.fields["title"] == "Neural GPUs Learn Algorithms" and ref.fields["month"] == "may"
    assert ref.fields["booktitle"] == "International Conference on Learning Representations (ICLR)"
    assert ref.persons["author"][0] == {"family": "Kaiser", "given": "\u0141ukasz"}
    schmidhuber = _ref(client, "schmidhuberLearningControlFastweight1992")
    assert schmidhuber.persons["author"][0]["given"] == "J\u00fcrgen" and schmidhuber.fields["pages"] == "131\u2013139"
    stamp = ref.updated_at

    again = client.post("/references", content=GOOD_BIB, headers={"Content-Type": "text/x-bibtex", **WRITE})
    assert again.status_code == 200
    assert again.json()["unchanged"] == ["kaiserNeuralGPUsLearn2016", "schmidhuberLearningControlFastweight1992"]
    assert again.json()["created"] == [] and _count(client) == before + 2
    assert _ref(client, "kaiserNeuralGPUsLearn2016").updated_at == stamp


def test_duplicate_key_inside_one_file_is_refused(client):
    dup = GOOD_BIB + "\n@misc{kaiserNeuralGPUsLearn2016, title={Other}, author={Doe, J}, year={2016}}\n" \
                     "@misc{SchmidhuberLearningControlFastweight1992, title={Other}, author={Doe, J}, year={1992}}\n"
    before = _count(client)
    r = client.post("/references", content=dup, headers={**BIB, **WRITE})
    assert _problems(r) == {("kaiserNeuralGPUsLearn2016", None), ("SchmidhuberLearningControlFastweight1992", None)}
    assert all("duplicate" in p["message"] for p in r.json()["error"]["details"]["problems"])
    assert _count(client) == before and _ref(client, "kaiserNeuralGPUsLearn2016") is None


def test_broken_bib_reports_every_problem_and_writes_nothing(client):
    broken = r"""
@article{fineEntry2021, title={A Fine Entry}, author={Doe, Jane}, journal={J}, year={2021}}
@article{noTitle2020, author={Doe, Jane}, year={2020}}
@article{noAuthorNoYear, title={Orphan}}
@article{badYear2020, title={T}, author={Doe, Jane}, year={20xx}}
@article{badDoi2019, title={T}, author={Doe, Jane}, year={2019}, doi={https://doi.org/10.1000/xyz}}
@article{badPages2019, title={T}, author={Doe, Jane}, year={2019}, pages={1-9}}
@article{badName2019, title={T}, author={Doe, Jane, Jr, Extra}, year={2019}}
@article{broken2020, title={Unclosed, author={Doe, Jane}, year={2020}}
@article{""" + SE_KEY + r""", title={Squeeze-and-Excitation Networks}, author={Hu, Jie}, year={2018}}
"""
    before = _count(client)
    r = client.post("/references", content=broken, headers={**BIB, **WRITE})
    assert _problems(r) == {
        ("noTitle2020", "title"), ("noAuthorNoYear", "author"), ("noAuthorNoYear", "year"), ("badYear2020", "year"),
        ("badDoi2019", "doi"), ("badPages2019", "pages"), ("badName2019", "author"), ("broken2020", None),
        (SE_KEY, None)}
    problems = r.json()["error"]["details"]["problems"]
    assert all(isinstance(p["line"], int) and p["message"] for p in problems)
    assert [p["line"] for p in problems] == sorted(p["line"] for p in problems)
    conflict = next(p for p in problems if p["key"] == SE_KEY)
    assert "on_conflict=replace" in conflict["message"]
    assert _count(client) == before and _ref(client, "fineEntry2021") is None
    assert _ref(client, SE_KEY).fields["title"] == "Squeeze-and-Excitation Networks" and _ref(client, SE_KEY).persons[
        "author"][1]["family"] == "Shen", "the stored reference is untouched"


def test_conflicting_key_replace_skip_and_sync_from_data(client):
    new = "@article{" + SE_KEY + ", title={Squeeze-and-Excitation Networks}, author={Hu, Jie and Shen, Li}, " \
                                 "journal={Journal Version}, year={2018}}"
    skip = client.post("/references?on_conflict=skip", content=new, headers={**BIB, **WRITE})
    assert skip.json()["skipped"] == [SE_KEY] and _ref(client, SE_KEY).source == "data"
    assert client.post("/references?onconflict=replace", content=new, headers={**BIB, **WRITE}).status_code == 400
    r = client.post("/references?on_conflict=replace", content=new, headers={**BIB, **WRITE})
    assert r.status_code == 200 and r.json()["updated"] == [SE_KEY]
    ref = _ref(client, SE_KEY)
    assert ref.source == "api" and ref.fields["journal"] == "Journal Version"
    # data/references.bib has the same key, so a sync puts the distributed entry back
    sync_module.sync(client.app.state.engine, REPO_DATA)
    ref = _ref(client, SE_KEY)
    assert ref.source == "data" and "journal" not in ref.fields


def test_ris_import_generates_unique_better_bibtex_keys(client):
    before = _count(client)
    original = _ref(client, SE_KEY).bibtex
    r = client.post("/references", content=ITTI_RIS + "\n" + SE_RIS, headers={**RIS, **WRITE})
    assert r.status_code == 200, r.text
    # the CVPR entry in data/ owns the bare key, so the two new versions get 'a' and 'b' as Better BibTeX does
    created = ["ittiModelSaliencybasedVisual1998", "schmidhuberLearningControlFastWeight1992", SE_KEY + "a",
               SE_KEY + "b"]
    assert r.json()["created"] == created
    assert _count(client) == before + 4 and _ref(client, SE_KEY).bibtex == original

    ref = _ref(client, "ittiModelSaliencybasedVisual1998")
    assert ref.source == "api" and ref.entry_type == "article"
    assert ref.fields["journal"] == "IEEE Transactions on Pattern Analysis and Machine Intelligence"
    assert ref.fields["pages"] == "1254\u20131259" and ref.fields["month"] == "nov" and ref.fields["year"] == "1998"
    assert (ref.fields["volume"], ref.fields["number"], ref.fields["doi"]) == ("20", "11", "10.1109/34.730558")
    assert [p["family"] for p in ref.persons["author"]] == ["Itti", "Koch", "Niebur"]
    entry = bibtexparser.parse_string(ref.bibtex).entries[0]
    assert entry.key == "ittiModelSaliencybasedVisual1998" and entry["pages"] == "1254--1259"
    schmidhuber = _ref(client, "schmidhuberLearningControlFastWeight1992")
    assert schmidhuber.persons["author"] == [{"family": "Schmidhuber", "given": "J\u00fcrgen"}]
    assert 'Schmidhuber, J{\\"u}rgen' in schmidhuber.bibtex, "non-ASCII is LaTeX-encoded in the BibTeX"
    arxiv = _ref(client, SE_KEY + "b")
    assert arxiv.fields["eprint"] == "1709.01507" and arxiv.fields["archiveprefix"] == "arXiv"
    assert bibtexparser.parse_string(_ref(client, SE_KEY + "a").bibtex).entries[0]["doi"] == "10.1109/CVPR.2018.00745"

    again = client.post("/references", content=ITTI_RIS + SE_RIS, headers={**RIS, **WRITE})
    assert again.json()["unchanged"] == created
    assert again.json()["created"] == [] and _count(client) == before + 4


def test_broken_ris_reports_records_and_writes_nothing(client):
    broken = ITTI_RIS + "TY  - JOUR\nAU  - Doe, Jane\nPY  - 20xx\nDO  - doi:10.1/x\nER  - \n" \
                           "TY  - JOUR\nTI  - No End\nAU  - Doe, Jane\nPY  - 2020\n"
    before = _count(client)
    assert _problems(client.post("/references", content=broken, headers={**RIS, **WRITE})) == {
        (None, "TI"), (None, "PY"), (None, "DO"), (None, "ER")}
    assert _count(client) == before


def test_import_checks_media_type_encoding_and_size(client, tmp_path, loaded_db):
    assert client.post("/references", content=GOOD_BIB, headers={"Content-Type": "text/plain", **WRITE}
                       ).status_code == 415
    assert client.post("/references", content="@misc{x, title={\xe9}}".encode("latin-1"),
                       headers={**BIB, **WRITE}).status_code == 400
    assert _problems(client.post("/references", content="no entries here", headers={**BIB, **WRITE})) == {
        (None, None)}
    with TestClient(_fresh_app(tmp_path / "small", loaded_db, max_import_bytes=1000)) as c:
        r = c.post("/references", content=GOOD_BIB + "%" * 1000, headers={**BIB, **WRITE})
        assert r.status_code == 413 and r.json()["error"]["details"]["limit"] == 1000


# ---------------------------------------------------------------------------------------------------
# PATCH

def test_patch_shows_in_get_search_and_filters_and_survives_sync(client):
    first = client.get(f"/techniques/{SLUG}")
    summary = ("A rewritten summary: the zanzibarquokka gate squeezes each channel to its mean and excites it "
               "through a two-layer bottleneck.")
    r = client.patch(f"/techniques/{SLUG}", headers={**MERGE, **WRITE, "If-Match": first.headers["etag"]},
                     json={"summary": summary, "applications": ["image-classification", "visual-grounding"],
                           "formula": {"latex": "s = \\sigma\\big(W_2\\,\\delta(W_1 z)\\big)"}, "survey_note": None})
    assert r.status_code == 200, r.text
    got = client.get(f"/techniques/{SLUG}")
    assert got.json() == r.json() and got.headers["etag"] == r.headers["etag"] != first.headers["etag"]
    body = got.json()
    assert body["summary"] == summary and body["survey_note"] is None
    assert body["applications"] == ["image-classification", "visual-grounding"]
    assert body["formula"]["latex"] == "s = \\sigma\\big(W_2\\,\\delta(W_1 z)\\big)"
    assert body["formula"]["legend"] == first.json()["formula"]["legend"], "merge patch keeps the legend"
    assert _technique(client).edited_via_api

    assert [t["slug"] for t in client.get("/techniques", params={"q": "zanzibarquokka"}).json()["items"]] == [SLUG]
    tagged = client.get("/techniques", params={"application": "visual-grounding"}).json()["items"]
    assert [t["slug"] for t in tagged] == [SLUG]
    assert "object-detection" not in client.get(f"/techniques/{SLUG}").json()["applications"]

    report = sync_module.sync(client.app.state.engine, REPO_DATA)
    assert SLUG in report.kept_edited and SLUG not in report.updated
    after = client.get(f"/techniques/{SLUG}")
    assert after.json()["summary"] == summary and after.headers["etag"] == r.headers["etag"]
    assert [t["slug"] for t in client.get("/techniques", params={"q": "zanzibarquokka"}).json()["items"]] == [SLUG]


def test_patch_with_bad_latex_names_the_fields_and_writes_nothing(client):
    before = client.get(f"/techniques/{SLUG}")
    r = client.patch(f"/techniques/{SLUG}", headers={**MERGE, **WRITE},
                     json={"formula": {"latex": "s = \\sigma(\\frac{W_1 z}{2} + \\sneeze"},
                           "strengths": ["too short"]})
    assert r.status_code == 422
    err = r.json()["error"]
    fields = {p["field"] for p in err["details"]["problems"]}
    assert "formula.latex" in fields and "formula.latex" in err["message"]
    assert any(f == "strengths" or f.startswith("strengths.") for f in fields)
    assert any("\\sneeze" in p["problem"] for p in err["details"]["problems"])
    after = client.get(f"/techniques/{SLUG}")
    assert after.json() == before.json() and after.headers["etag"] == before.headers["etag"]
    assert not _technique(client).edited_via_api


def test_patch_if_match_mismatch_is_412(client):
    etag = client.get(f"/techniques/{SLUG}").headers["etag"]
    for stale in ['"0123456789abcdef"', f"W/{etag}"]:
        r = client.patch(f"/techniques/{SLUG}", headers={**MERGE, **WRITE, "If-Match": stale},
                         json={"aliases": ["SE"]})
        assert r.status_code == 412 and r.json()["error"]["details"]["etag"] == etag
    ok = client.patch(f"/techniques/{SLUG}", headers={**MERGE, **WRITE, "If-Match": etag}, json={"aliases": ["SE"]})
    assert ok.status_code == 200
    late = client.patch(f"/techniques/{SLUG}", headers={**MERGE, **WRITE, "If-Match": etag},
                        json={"aliases": ["SENet"]})
    assert late.status_code == 412
    assert client.get(f"/techniques/{SLUG}").json()["aliases"] == ["SE"]


def test_patch_refuses_unknown_and_required_fields_and_bad_bodies(client):
    before = client.get(f"/techniques/{SLUG}").json()
    r = client.patch(f"/techniques/{SLUG}", headers={**MERGE, **WRITE}, json={"slug": "x", "colour": "red"})
    assert r.status_code == 422
    assert r.json()["error"]["details"]["unknown"] == ["colour", "slug"]
    assert "summary" in r.json()["error"]["details"]["allowed"]
    assert client.patch(f"/techniques/{SLUG}", headers={**MERGE, **WRITE}, json={"summary": None}).status_code == 422
    assert client.patch(f"/techniques/{SLUG}", headers={**MERGE, **WRITE}, json=["summary"]).status_code == 422
    assert client.patch(f"/techniques/{SLUG}", headers={**MERGE, **WRITE}, content=b"{not json").status_code == 400
    assert client.patch(f"/techniques/{SLUG}", headers={"Content-Type": "text/plain", **WRITE},
                        content=b"{}").status_code == 415
    assert client.patch("/techniques/no-such-technique", headers={**MERGE, **WRITE}, json={}).status_code == 404
    assert client.get(f"/techniques/{SLUG}").json() == before and not _technique(client).edited_via_api
