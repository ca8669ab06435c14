"""GET /techniques checks its query parameters in one compiled pass (api/techniques.py, _ListRoute): it must
answer every request exactly as FastAPI's own parameter handling of the same declarations does."""

from __future__ import annotations

import json
import random

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from service.api import techniques
from service.main import create_app
from tests.conftest import make_settings

VALUES = {
    "category": ["soft", "hard", "", "x"], "subcategory": ["channel", "spatial", ""],
    "application": ["semantic-segmentation", "", "image-classification"],
    "year_min": ["2018", "1800", "x", "", "2100", "2101"], "year_max": ["2020", "abc", "3000"],
    "has_implementation": ["true", "false", "1", "no", "maybe", ""],
    "q": ["attention", "", "*", "a" * 201, "channel gate"], "sort": ["name", "-year", "relevance", "bogus", ""],
    "limit": ["1", "0", "100", "101", "x", "", "5"], "cursor": ["", "abc", "x" * 501],
    "fields": ["slug,name", "nope", "", "slug,,name"], "colour": ["red"],
}


def _queries(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [f"{k}={rnd.choice(VALUES[k])}" for k in rnd.sample(sorted(VALUES), rnd.randint(0, 4))
                 for _ in range(rnd.choice([1, 1, 2]))]
        out.append("&".join(parts))
    return out


def _answer(r) -> tuple[int, str]:
    if r.status_code != 200:
        return r.status_code, r.text
    j = r.json()  # records carry their database's timestamps: compare what was selected, in order
    return 200, json.dumps([[i.get("slug"), i.get("name")] for i in j["items"]]
                           + [j["total"], j["limit"], j["sort"], j["next_cursor"]])


def test_same_answers_as_fastapi_parameter_handling(tmp_path, monkeypatch):
    queries = _queries(200, seed=20261130)
    got = {}
    for name in ("compiled", "fastapi"):
        if name == "fastapi":
            monkeypatch.setattr(techniques._ListRoute, "get_route_handler", APIRoute.get_route_handler)
        settings = make_settings(tmp_path / name, "sqlite", catalog_response_cache_bytes=0)
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            got[name] = [_answer(c.get("/techniques?" + q)) for q in queries]
    assert {s for s, _ in got["compiled"]} == {200, 400, 422}  # the sample reaches every outcome
    for q, a, b in zip(queries, got["compiled"], got["fastapi"], strict=True):
        assert a == b, q


def test_the_document_states_the_checked_constraints():
    app = FastAPI()
    app.include_router(techniques.router)
    params = {p["name"]: p for p in app.openapi()["paths"]["/techniques"]["get"]["parameters"]}
    assert set(params) == {"category", "subcategory", "application", "year_min", "year_max", "has_implementation",
                           "q", "sort", "limit", "cursor", "fields"}
    assert params["limit"]["schema"]["anyOf"][0]["minimum"] == 1
    assert params["q"]["schema"]["anyOf"][0]["maxLength"] == 200
    assert params["year_min"]["schema"]["anyOf"][0]["maximum"] == 2100
    assert params["application"]["schema"]["type"] == "array"
