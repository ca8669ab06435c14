"""Several server processes on one database: a write through one is read through the other."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.conftest import BACKENDS, _fresh_pg_database
from tests.ops.test_operations import start_server

KEY = "replica-test-key"
KEY_SETTING = f"tester:write:{hashlib.sha256(KEY.encode()).hexdigest()}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_servers_share_one_database(tmp_path, backend):
    env = {"ATLAS_API_KEYS": KEY_SETTING}
    if backend == "postgresql":
        env["ATLAS_DATABASE_URL"] = _fresh_pg_database()
    else:
        env["ATLAS_DATABASE_URL"] = f"sqlite:///{tmp_path / 'shared.db'}"
    first, base_a = start_server(env, tmp_path / "a")
    try:
        second, base_b = start_server(env, tmp_path / "b")  # starts on the database the first one prepared
        try:
            assert httpx.get(f"{base_b}/techniques").json()["total"] == httpx.get(f"{base_a}/techniques").json()["total"]
            before = httpx.get(f"{base_b}/techniques/non-local").json()
            new_summary = before["summary"] + " Edited on replica A and read on replica B."
            r = httpx.patch(f"{base_a}/techniques/non-local", json={"summary": new_summary},
                            headers={"Authorization": f"Bearer {KEY}"})
            assert r.status_code == 200, r.text
            after = httpx.get(f"{base_b}/techniques/non-local").json()
            assert after["summary"] == new_summary
            hits = httpx.get(f"{base_b}/techniques", params={"q": "replica"}).json()["items"]
            assert [t["slug"] for t in hits] == ["non-local"]
        finally:
            second.terminate()
            second.wait(timeout=60)
    finally:
        first.terminate()
        first.wait(timeout=60)
