"""The cost routes through the real app, against the profile file read independently."""

from __future__ import annotations

import json
import shutil

import pytest
from sqlmodel import Session, select

from service.catalog.loader import CatalogInvalid
from service.catalog.sync import sync
from service.db import make_engine
from service.migrate import upgrade
from service.models import CostCurve, CostProfile
from service.settings import REPO_DATA

from ..conftest import make_settings

PROFILE = json.loads((REPO_DATA / "costs" / "cpu.json").read_text(encoding="utf-8"))


def test_technique_cost_serves_the_profile(client):
    r = client.get("/techniques/non-local/cost")
    assert r.status_code == 200
    body = r.json()
    assert body["profile"]["name"] == "cpu"
    assert body["profile"]["machine"] == PROFILE["machine"]
    assert body["profile"]["conditions"] == PROFILE["conditions"]
    want = PROFILE["techniques"]["non-local"]["curves"]
    assert [c["axis"] for c in body["curves"]] == sorted(c["axis"] for c in want)
    got, exp = body["curves"][0], next(c for c in want if c["axis"] == body["curves"][0]["axis"])
    assert [p["x"] for p in got["points"]] == [p["x"] for p in exp["points"]]
    assert [p["latency_s"] for p in got["points"]] == [p["latency_s"] for p in exp["points"]]
    assert [p["peak_bytes"] for p in got["points"]] == [p["peak_bytes"] for p in exp["points"]]
    assert got["fits"]["time"]["exponent"] == exp["fits"]["time"]["exponent"]
    assert body["stated"]["time"].startswith("O(")
    assert r.headers["etag"]
    assert client.get("/techniques/non-local/cost", headers={"If-None-Match": r.headers["etag"]}).status_code == 304


def test_compare_costs_on_one_axis(client):
    r = client.get("/costs", params={"slugs": "squeeze-and-excitation,non-local", "axis": "channels"})
    assert r.status_code == 200
    body = r.json()
    assert body["axis"] == "channels" and body["profile"]["name"] == "cpu"
    assert [s["technique"] for s in body["series"]] == ["squeeze-and-excitation"]  # non-local has no channel curve
    assert body["missing"] == ["non-local"]
    r = client.get("/costs?slugs=non-local&slugs=transformer,non-local")  # repeated and comma-separated, deduplicated
    assert [s["technique"] for s in r.json()["series"]] == ["non-local", "transformer"]
    assert r.json()["axis"] == "positions"


@pytest.mark.parametrize("query, status, fragment", [
    ("/costs?slugs=non-local,no-such-thing", 404, "no-such-thing"),
    ("/costs?slugs=Non_Local", 400, "not a technique slug"),
    ("/costs?slugs=" + ",".join(f"t{i}" for i in range(13)), 400, "1 to 12"),
    ("/costs?slugs=,", 400, "1 to 12"),
    ("/costs", 422, "slugs"),
    ("/costs?slugs=non-local&axis=depth", 422, "axis"),
    ("/costs?slugs=non-local&profile=no-such-profile", 404, "no-such-profile"),
    ("/costs?slugs=non-local&colour=red", 400, "colour"),
    ("/techniques/no-such-thing/cost", 404, "no-such-thing"),
    ("/techniques/non-local/cost?profile=gpu-x", 404, "gpu-x"),
])
def test_bad_requests_get_the_error_shape(client, query, status, fragment):
    r = client.get(query)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"code", "message", "details"}
    assert fragment in json.dumps(err)


def test_profiles_are_listed(client):
    body = client.get("/costs/profiles").json()
    assert body["default"] == "cpu"
    assert [p["name"] for p in body["items"]] == ["cpu"]
    assert body["items"][0]["machine"]["cpu_model"] == PROFILE["machine"]["cpu_model"]


def _knowledge_copy(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(REPO_DATA, root)
    return root


def _counts(engine):
    with Session(engine) as s:
        return (len(s.exec(select(CostProfile)).all()), len(s.exec(select(CostCurve)).all()))


def test_sync_loads_validates_and_is_idempotent(tmp_path, backend):
    root = _knowledge_copy(tmp_path)
    engine = make_engine(make_settings(tmp_path, backend))
    upgrade(engine)
    report = sync(engine, root)
    n_curves = sum(len(t["curves"]) for t in PROFILE["techniques"].values())
    assert report.cost_profiles == ["cpu"]
    assert _counts(engine) == (1, n_curves)
    with Session(engine) as s:
        stamp = s.get(CostProfile, "cpu").updated_at
    assert sync(engine, root).cost_profiles == []  # unchanged: not rewritten
    with Session(engine) as s:
        assert s.get(CostProfile, "cpu").updated_at == stamp

    # an invalid second profile: the whole sync is refused and nothing changes
    bad = json.loads((root / "costs" / "cpu.json").read_text())
    bad["profile"] = "cuda-test"
    bad["machine"]["device"] = "cuda"
    first = next(iter(bad["techniques"].values()))["curves"][0]["points"][0]
    first["latency_s"] = -1
    (root / "costs" / "cuda-test.json").write_text(json.dumps(bad))
    with pytest.raises(CatalogInvalid) as info:
        sync(engine, root)
    assert any("cuda-test.json" in str(p) and "latency_s" in str(p) for p in info.value.problems)
    assert _counts(engine) == (1, n_curves)

    # valid now, and named after its file: loaded beside the first
    first["latency_s"] = 0.001
    (root / "costs" / "cuda-test.json").write_text(json.dumps(bad))
    assert sync(engine, root).cost_profiles == ["cuda-test"]
    assert _counts(engine) == (2, 2 * n_curves)

    # removing a file removes its profile
    (root / "costs" / "cuda-test.json").unlink()
    sync(engine, root)
    assert _counts(engine) == (1, n_curves)
    engine.dispose()


def test_sync_refuses_curves_of_unknown_techniques(tmp_path):
    root = _knowledge_copy(tmp_path)
    prof = json.loads((root / "costs" / "cpu.json").read_text())
    prof["techniques"]["not-a-technique"] = next(iter(prof["techniques"].values()))
    (root / "costs" / "cpu.json").write_text(json.dumps(prof))
    engine = make_engine(make_settings(tmp_path))
    upgrade(engine)
    with pytest.raises(CatalogInvalid) as info:
        sync(engine, root)
    assert any("not-a-technique" in str(p) for p in info.value.problems)
    engine.dispose()
