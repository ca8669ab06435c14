"""A real server for client tests: uvicorn on a free loopback port, its own SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import free_port, stop, wait_ready

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """Base URL of the app served by uvicorn in a child process; stopped at the end of the test run."""
    yield from _serve(tmp_path_factory.mktemp("live"), {})


@pytest.fixture(scope="module")
def live_server_shm(tmp_path_factory):
    """The same with client shared-memory regions enabled."""
    yield from _serve(tmp_path_factory.mktemp("live-shm"), {"ATLAS_RUN_SHM_CLIENT_REGIONS": "true"})


def _serve(var: Path, extra: dict[str, str]):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_") and k != "DATABASE_URL"}
    env.update(ATLAS_VAR_DIR=str(var), ATLAS_HOST="127.0.0.1", ATLAS_PORT=str(port), **extra)
    log = open(var / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.main:create_app", "--factory",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, output=lambda: (var / "server.log").read_text()[-2000:])
        yield url
    finally:
        stop(proc)
        log.close()
