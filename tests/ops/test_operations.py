"""Operations: metrics, request ids, JSON logs, readiness, online backup, graceful shutdown."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save as st_save

from service.cli import main as cli_main
from service.main import create_app
from service.observability import JsonFormatter
from tests.conftest import make_settings
from tests.live import free_port, wait_ready

REPO = Path(__file__).resolve().parents[2]


def test_metrics_count_requests_by_route_and_runs_by_technique(client):
    client.get("/techniques/cbam")
    client.get("/techniques/no-such-technique")
    client.post("/techniques/squeeze-and-excitation/run",
                json={"inputs": {"x": {"shape": [1, 4, 1, 1], "data": [1, 2, 3, 4]}}, "hyperparameters": {"reduction": 2}})
    text = client.get("/metrics").text
    assert 'atlas_http_requests_total{method="GET",route="/techniques/{slug}",status="200"}' in text
    assert 'atlas_http_requests_total{method="GET",route="/techniques/{slug}",status="404"}' in text
    assert 'atlas_runs_total{technique="squeeze-and-excitation"} 1.0' in text
    assert "atlas_run_forward_seconds_bucket" in text and "atlas_http_request_duration_seconds_bucket" in text


def test_request_id_is_returned_and_client_ids_are_kept(client):
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert client.get("/healthz", headers={"X-Request-ID": "bad id\n"}).headers["x-request-id"] != "bad id\n"


def test_json_log_lines_carry_the_request_id():
    record = logging.LogRecord("service.access", logging.INFO, __file__, 1, "GET %s %s", ("/x", 200), None)
    record.request_id, record.status, record.duration_ms = "rid-1", 200, 1.5
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "rid-1" and line["message"] == "GET /x 200" and line["status"] == 200
    assert line["level"] == "info" and line["ts"].endswith("+00:00")


def test_readiness_needs_a_migrated_loaded_database(tmp_path):
    settings = make_settings(tmp_path, sync_on_start=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] != "ready"
        assert c.get("/healthz").status_code == 200


def test_online_backup_is_consistent_while_a_writer_is_busy(tmp_path, monkeypatch, capsys):
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as c:
        total = c.get("/techniques").json()["total"]
    db = tmp_path / "atlas.db"
    writer = sqlite3.connect(db)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE techniques SET summary = 'uncommitted' WHERE slug = 'cbam'")
    monkeypatch.setenv("ATLAS_DATABASE_URL", f"sqlite:///{db}")
    dest = tmp_path / "backups" / "copy.db"
    assert cli_main(["db", "backup", str(dest)]) == 0
    writer.rollback()
    writer.close()
    copy = sqlite3.connect(dest)
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT count(*) FROM techniques").fetchone()[0] == total
    assert copy.execute("SELECT summary FROM techniques WHERE slug = 'cbam'").fetchone()[0] != "uncommitted"
    copy.close()
    # the copy is a working database: the service starts on it without reloading anything
    restored = make_settings(tmp_path / "restored")
    restored_db = Path(restored.url.removeprefix("sqlite:///"))
    restored_db.parent.mkdir(parents=True, exist_ok=True)
    restored_db.write_bytes(dest.read_bytes())
    with TestClient(create_app(restored)) as c:
        assert c.get("/techniques").json()["total"] == total


def start_server(env_extra: dict[str, str], tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "ATLAS_VAR_DIR": str(tmp), "ATLAS_PORT": str(port), "ATLAS_HOST": "127.0.0.1", **env_extra}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, proc, timeout=90, output=proc.stdout.read)
    return proc, base


def test_graceful_shutdown_finishes_the_running_request(tmp_path):
    proc, base = start_server({}, tmp_path)
    try:
        body = st_save({"x": torch.randn(4, 128, 28, 28)})
        result: dict = {}

        def slow_run():
            result["response"] = httpx.post(f"{base}/techniques/pixel-wise-contextual-attention/run", content=body,
                                            headers={"Content-Type": "application/vnd.safetensors"}, timeout=120)

        worker = threading.Thread(target=slow_run)
        worker.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        worker.join(timeout=120)
        assert result["response"].status_code == 200
        # uvicorn finishes in-flight requests, then re-raises the SIGTERM it caught
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        logs = proc.stdout.read()
        lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
        access = [line for line in lines if line["logger"] == "service.access"]
        assert any(a["path"].endswith("/run") and a["status"] == 200 and a["request_id"] for a in access)
    finally:
        if proc.poll() is None:
            proc.kill()
