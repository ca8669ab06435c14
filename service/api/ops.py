"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"example": (
                'atlas_http_requests_total{method="GET",route="/techniques",status="200"} 12.0\n'
                'atlas_runs_total{technique="cbam"} 3.0\n')}}}})
def metrics(request: Request) -> Response:
    """Request counts and latency by route and status; run counts and forward-pass durations by technique."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
