"""The read model: pages served from the in-memory snapshot are the pages the SQL query layer computes
(filters, sorts, search ranks, cursors), its JSON is the public representation, and it follows the
catalogue version that every write raises."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from sqlalchemy import text
from sqlmodel import Session

from service.catalog import query
from service.catalog.snapshot import SnapshotStore, build, select_page
from service.catalog.sync import sync as sync_from
from service.catalog.version import DedicatedConnection, bump, catalogue_version
from service.db import make_engine
from service.migrate import upgrade
from service.settings import REPO_DATA
from tests.conftest import make_settings

CASES = [
    query.Filters(),
    query.Filters(category="soft"),
    query.Filters(category="hard"),
    query.Filters(subcategory="channel"),
    query.Filters(subcategory="self"),
    query.Filters(applications=["semantic-segmentation"]),
    query.Filters(applications=["image-classification", "object-detection"]),
    query.Filters(year_min=2018, year_max=2020),
    query.Filters(year_min=2021),
    query.Filters(has_implementation=True),
    query.Filters(has_implementation=False),
    query.Filters(category="soft", subcategory="spatial", year_max=2019),
    query.Filters(q="attention"),
    query.Filters(q="channel"),
    query.Filters(q="criss-cross"),
    query.Filters(q='"non-local" OR transformer'),
    query.Filters(q="segment*", subcategory="self"),
    query.Filters(q="no-such-word-anywhere"),
]
SORTS = ["name", "-name", "year", "-year", "slug", "relevance"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, backend):
    engine = make_engine(make_settings(tmp_path_factory.mktemp("snap"), backend))
    upgrade(engine)
    sync(engine)
    yield engine
    engine.dispose()


def sync(engine, root=REPO_DATA):
    return sync_from(engine, root)


def _all_pages(page_at) -> list[tuple]:
    """Every page from ``page_at(cursor)`` -> (slugs, total, next_cursor, ranks), following next_cursor."""
    out, cursor = [], None
    for _ in range(100):
        out.append(page_at(cursor))
        cursor = out[-1][2]
        if not cursor:
            return out
    raise AssertionError("paging did not end")


def _sql_pages(engine, flt, sort, limit):
    with Session(engine) as s:
        def page_at(cursor):
            page = query.list_techniques(s, flt, sort, limit, cursor)
            return ([t.slug for t in page.items], page.total, page.next_cursor,
                    [page.ranks.get(t.slug) for t in page.items])
        return _all_pages(page_at)


def _snapshot_pages(engine, snap, flt, sort, limit):
    ranks = None
    if flt.q:
        ranks = query.search_ranks(engine, flt.q)
        own = DedicatedConnection(engine)
        assert query.search_ranks(engine, flt.q, own) == ranks  # the request path's own connection
        own.close()

    def page_at(cursor):
        page = select_page(snap, flt, sort, limit, cursor, ranks)
        return ([e.slug for e in page.entries], page.total, page.next_cursor,
                [page.ranks.get(e.slug) for e in page.entries])
    return _all_pages(page_at)


@pytest.mark.parametrize("flt", CASES, ids=lambda f: ",".join(f"{k}={v}" for k, v in vars(f).items() if v))
def test_snapshot_pages_equal_the_sql_pages(engine, flt):
    snap = build(engine)
    for sort in SORTS:
        if sort == "relevance" and not flt.q:
            continue
        for limit in (4, 100):
            assert _snapshot_pages(engine, snap, flt, sort, limit) == _sql_pages(engine, flt, sort, limit), (sort, limit)


def test_snapshot_json_is_the_public_representation(engine):
    snap = build(engine)
    with Session(engine) as s:
        slugs = [r[0] for r in s.execute(text("SELECT slug FROM techniques ORDER BY slug"))]
        assert sorted(snap.entries) == slugs
        for slug in slugs:
            t = query.get_technique(s, slug)
            public = query.to_public(t, query.load_related(s, [slug]))
            entry = snap.entries[slug]
            assert json.loads(entry.resource.body) == public
            assert json.loads(entry.row(["name", "year", "citation"], rank=-1.5)) == {
                "name": public["name"], "year": public["year"], "citation": public["citation"], "score": 1.5}
        assert json.loads(snap.taxonomy.body) == query.taxonomy_payload(s)
        assert json.loads(snap.applications.body) == query.applications_payload(s)
        assert snap.last_modified == query.catalog_last_modified(s)


def test_a_cursor_with_a_key_of_the_wrong_type_is_a_400(engine):
    snap = build(engine)
    bad = query._encode_cursor("year", "not-a-year", "cbam")
    with pytest.raises(query.ApiError) as err:
        select_page(snap, query.Filters(), "year", 5, bad)
    assert err.value.status == 400


def _version(engine) -> int:
    with Session(engine) as s:
        return catalogue_version(s)


def test_every_sync_raises_the_version_and_the_store_follows(migrated_engine, tmp_path, knowledge_dir):
    v0 = _version(migrated_engine)
    sync(migrated_engine)
    v1 = _version(migrated_engine)
    assert v1 > v0
    store = SnapshotStore(migrated_engine, check_interval_ms=0)
    first = store.current()
    assert first.version == v1 and store.current() is first  # unchanged version: the same snapshot

    data = tmp_path / "knowledge"
    shutil.copytree(knowledge_dir, data)
    path = data / "techniques" / "cbam.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["summary"] = doc["summary"] + " A sentence added to the file."
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    sync(migrated_engine, data)
    assert _version(migrated_engine) > v1
    second = store.current()
    assert second is not first and second.version == _version(migrated_engine)
    assert json.loads(second.entries["cbam"].resource.body)["summary"] == doc["summary"]
    assert second.entries["cbam"].resource.etag != first.entries["cbam"].resource.etag
    assert second.digest != first.digest
    assert second.entries["non-local"].resource.etag == first.entries["non-local"].resource.etag
    store.close()


def test_the_store_rebuilds_on_the_version_alone(migrated_engine):
    """A change written without raising the version is not seen; raising it makes it seen (the version is
    what every process compares)."""
    sync(migrated_engine)
    store = SnapshotStore(migrated_engine, check_interval_ms=0)
    before = store.current()
    with Session(migrated_engine) as s:
        s.execute(text("UPDATE techniques SET name = 'Renamed' WHERE slug = 'cbam'"))
        s.commit()
    assert store.current() is before
    with Session(migrated_engine) as s:
        bump(s)
        s.commit()
    assert store.current().entries["cbam"].name == "Renamed"
    store.close()


def test_a_check_interval_bounds_how_often_the_version_is_read(migrated_engine):
    sync(migrated_engine)
    reads = []
    store = SnapshotStore(migrated_engine, check_interval_ms=60_000)
    original = store._probe.read
    store._probe.read = lambda: reads.append(1) or original()
    snap = store.current()
    with Session(migrated_engine) as s:
        bump(s)
        s.commit()
    for _ in range(20):
        assert store.current() is snap
    assert len(reads) == 1
    store.close()


def test_version_on_an_empty_database(migrated_engine):
    assert _version(migrated_engine) == 1  # the migration's seed row
    with Session(migrated_engine) as s:
        s.execute(text("DELETE FROM catalogue_version"))
        assert catalogue_version(s) == 0
        bump(s)  # a removed row is recreated
        assert catalogue_version(s) == 2
        s.rollback()
