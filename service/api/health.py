"""Liveness and readiness."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
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
    body = {"status": "ready" if current == head and count else "not_ready", "database": engine.dialect.name,
            "migration": current, "head": head, "techniques": count}
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)


_SWAGGER = Path(__file__).resolve().parent.parent / "web" / "static" / "swagger"


@router.get("/docs", include_in_schema=False)
def docs(request: Request):
    """Swagger UI from this server's own static files when scripts/build-assets.sh installed them;
    otherwise FastAPI's default, which loads Swagger UI from a CDN."""
    from fastapi.openapi.docs import get_swagger_ui_html

    if (_SWAGGER / "swagger-ui-bundle.js").exists():
        return get_swagger_ui_html(openapi_url=request.app.openapi_url, title="Attention Atlas API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")
    return get_swagger_ui_html(openapi_url=request.app.openapi_url, title="Attention Atlas API")
