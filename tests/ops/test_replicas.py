"""Several server processes on one database: a write through one is read through the other at once, and
concurrent conditional writes through both lose no update."""

from __future__ import annotations

import hashlib
import threading

import httpx
import pytest

from tests.conftest import BACKENDS, _fresh_pg_database
from tests.ops.test_operations import start_server

KEY = "replica-test-key"
KEY_SETTING = f"tester:write:{hashlib.sha256(KEY.encode()).hexdigest()}"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _drain(proc) -> None:
    """Read the server's log as it comes, so a full pipe never stalls it."""
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()


@pytest.fixture(scope="module", params=BACKENDS)
def two_servers(request, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("replicas")
    env = {"ATLAS_API_KEYS": KEY_SETTING}
    if request.param == "postgresql":
        env["ATLAS_DATABASE_URL"] = _fresh_pg_database()
    else:
        env["ATLAS_DATABASE_URL"] = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = []
    try:
        for name in ("a", "b"):  # the second starts on the database the first one prepared
            proc, base = start_server(env, tmp_path / name)
            _drain(proc)
            procs.append((proc, base))
        yield procs[0][1], procs[1][1]
    finally:
        for proc, _ in procs:
            proc.terminate()
            proc.wait(timeout=60)


def test_a_write_through_one_server_is_read_through_the_other_at_once(two_servers):
    base_a, base_b = two_servers
    with httpx.Client() as c:
        assert c.get(f"{base_b}/techniques").json()["total"] == c.get(f"{base_a}/techniques").json()["total"]
        before = c.get(f"{base_b}/techniques/non-local")
        listing = c.get(f"{base_b}/techniques", params={"fields": "slug,summary", "limit": 100})
        apps = c.get(f"{base_b}/applications")
        assert c.get(f"{base_b}/techniques/non-local",
                     headers={"If-None-Match": before.headers["etag"]}).status_code == 304

        new_summary = before.json()["summary"] + " Edited on replica A and read on replica B."
        new_apps = before.json()["applications"] + ["replica-read-check"]
        r = c.patch(f"{base_a}/techniques/non-local", json={"summary": new_summary, "applications": new_apps},
                    headers=AUTH)
        assert r.status_code == 200, r.text

        # the very next reads through B see the write: the entry, its validator, lists, facets, search
        after = c.get(f"{base_b}/techniques/non-local", headers={"If-None-Match": before.headers["etag"]})
        assert after.status_code == 200 and after.json()["summary"] == new_summary
        assert after.headers["etag"] == r.headers["etag"] != before.headers["etag"]
        again = c.get(f"{base_b}/techniques", params={"fields": "slug,summary", "limit": 100},
                      headers={"If-None-Match": listing.headers["etag"]})
        assert again.status_code == 200
        assert {t["slug"]: t["summary"] for t in again.json()["items"]}["non-local"] == new_summary
        tags = c.get(f"{base_b}/applications", headers={"If-None-Match": apps.headers["etag"]})
        assert tags.status_code == 200 and "replica-read-check" in [i["tag"] for i in tags.json()["items"]]
        assert [t["slug"] for t in c.get(f"{base_b}/techniques",
                                         params={"application": "replica-read-check"}).json()["items"]] == ["non-local"]
        hits = c.get(f"{base_b}/techniques", params={"q": "replica"}).json()["items"]
        assert [t["slug"] for t in hits] == ["non-local"]


def _fire(requests: list[tuple[str, dict, dict]]) -> list[httpx.Response]:
    """Send the PATCHes at the same moment, each from its own thread and connection."""
    barrier = threading.Barrier(len(requests))
    out: list[httpx.Response | None] = [None] * len(requests)

    def one(i: int, url: str, body: dict, headers: dict) -> None:
        with httpx.Client(timeout=60) as c:
            c.get(url)  # connect first, so the PATCHes leave together
            barrier.wait()
            out[i] = c.patch(url, json=body, headers={**AUTH, **headers})

    threads = [threading.Thread(target=one, args=(i, *req)) for i, req in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None for r in out)
    return out  # type: ignore[return-value]


def test_concurrent_patches_with_one_etag_exactly_one_wins(two_servers):
    base_a, base_b = two_servers
    slug = "squeeze-and-excitation"
    for trial in range(6):
        current = httpx.get(f"{base_a}/techniques/{slug}")
        etag = current.headers["etag"]
        base_summary = current.json()["summary"].split(" [edit ")[0]
        edits = [(f"{base}/techniques/{slug}", {"summary": f"{base_summary} [edit {trial}.{i}]"},
                  {"If-Match": etag}) for i, base in enumerate((base_a, base_b, base_a, base_b))]
        responses = _fire(edits)
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 412, 412, 412], [(r.status_code, r.text[:200]) for r in responses]
        winner = next(r for r in responses if r.status_code == 200)
        for r in responses:
            if r.status_code == 412:
                assert r.json()["error"]["code"] == "precondition_failed"
        for base in (base_a, base_b):
            stored = httpx.get(f"{base}/techniques/{slug}")
            assert stored.json()["summary"] == winner.json()["summary"]
            assert stored.headers["etag"] == winner.headers["etag"]


def test_concurrent_patches_without_if_match_both_apply(two_servers):
    """Without If-Match each patch is merged onto the record it finally writes over: changes to different
    fields sent at the same moment through two servers are both kept."""
    base_a, base_b = two_servers
    slug = "cbam"
    for trial in range(4):
        responses = _fire([(f"{base_a}/techniques/{slug}", {"aliases": [f"CBAM-{trial}"]}, {}),
                           (f"{base_b}/techniques/{slug}", {"survey_note": f"Note number {trial} for CBAM."}, {})])
        assert [r.status_code for r in responses] == [200, 200], [r.text[:200] for r in responses]
        stored = httpx.get(f"{base_b}/techniques/{slug}").json()
        assert stored["aliases"] == [f"CBAM-{trial}"] and stored["survey_note"] == f"Note number {trial} for CBAM."
