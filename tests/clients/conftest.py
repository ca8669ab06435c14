"""A real server for client tests: uvicorn on a free loopback port, its own SQLite file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """Base URL of the app served by uvicorn in a child process; stopped at the end of the test run."""
    yield from _serve(tmp_path_factory.mktemp("live"), {})


@pytest.fixture(scope="module")
def live_server_shm(tmp_path_factory):
    """The same with client shared-memory regions enabled."""
    yield from _serve(tmp_path_factory.mktemp("live-shm"), {"ATLAS_RUN_SHM_CLIENT_REGIONS": "true"})


def _serve(var: Path, extra: dict[str, str]):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_") and k != "DATABASE_URL"}
    env.update(ATLAS_VAR_DIR=str(var), ATLAS_HOST="127.0.0.1", ATLAS_PORT=str(port), **extra)
    log = open(var / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.main:create_app", "--factory",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {(var / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready in 120 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
