"""Liveness and readiness."""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text

from .. import __version__

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness", responses={200: {"content": {"application/json": {
    "example": {"status": "ok", "version": __version__}}}}})
def healthz() -> dict:
    """The process is up and serving."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz", summary="Readiness: database reachable and migrated",
            responses={200: {"content": {"application/json": {"example": {
                "status": "ready", "database": "sqlite", "migration": "0001", "head": "0001", "techniques": 52}}}},
                       503: {"description": "not ready"}})
def readyz(request: Request):
    """Ready when the database answers, its schema is at the newest migration, and it holds the catalogue."""
    from ..migrate import current_revision, head_revision

    engine = request.app.state.engine
    head = head_revision()
    try:
        with engine.connect() as conn:
            current = current_revision(conn)
            count = conn.execute(text("SELECT count(*) FROM techniques")).scalar_one() if current else 0
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return JSONResponse({"status": "unavailable", "reason": str(exc)[:200]}, status_code=503)
    pool = request.app.state.runs.pool.snapshot()
    body = {"status": "ready" if current == head and count else "not_ready", "database": engine.dialect.name,
            "migration": current, "head": head, "techniques": count,
            # run workers start in the background (or on the first run); they do not gate readiness
            "run_workers": {k: pool[k] for k in ("workers", "idle", "busy", "spares", "starting")}}
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)


_SWAGGER = Path(__file__).resolve().parent.parent / "web" / "static" / "swagger"

_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Attention Atlas API</title>
<link rel="stylesheet" href="{root}/static/swagger/swagger-ui.css">
<link rel="icon" type="image/png" href="{root}/static/swagger/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{root}/static/swagger/swagger-ui-bundle.js"></script>
<script src="{root}/static/swagger-init.js"></script>
</body>
</html>
"""

_NO_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Attention Atlas API</title></head>
<body>
<h1>Attention Atlas API</h1>
<p>The interactive documentation needs Swagger UI, which <code>scripts/build-assets.sh</code> installs
(this service loads nothing from other sites). The OpenAPI document itself is at
<a href="{openapi}">{openapi}</a>.</p>
</body>
</html>
"""


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    """Swagger UI from this server's own static files (scripts/build-assets.sh installs them); its start-up
    script is a static file too, so the page runs under the Content-Security-Policy of every page."""
    root = request.scope.get("root_path", "").rstrip("/")
    openapi = html.escape(root + (request.app.openapi_url or "/openapi.json"))
    if (_SWAGGER / "swagger-ui-bundle.js").exists():
        return HTMLResponse(_DOCS_PAGE.format(root=html.escape(root), openapi=openapi))
    return HTMLResponse(_NO_DOCS_PAGE.format(openapi=openapi))
