"""The application factory: ``uvicorn --factory service.main:create_app``."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager, contextmanager

from fastapi import Depends, FastAPI

from . import __version__, errors, openapi
from .api import admin, citations, costs, health, oip, ops, readmodel, run, taxonomy, techniques, web
from .api.deps import forbid_unknown_query
from .db import make_engine
from .metrics import Metrics
from .observability import RequestContextMiddleware
from .runs.core import RunService
from .settings import Settings
from .web.security import SecurityHeadersMiddleware

log = logging.getLogger("service")

DESCRIPTION = """
The attention techniques reviewed in Hassanin et al., *Visual Attention Methods in Deep Learning:
An In-Depth Survey* (Information Fusion 108, 102417, 2024): the survey's taxonomy, a formula, strengths,
limitations and applications for each technique, citations of the original papers, and runnable
reference implementations.

Every error has the shape `{"error": {"code", "message", "details"}}`. Unknown query parameters are
rejected with 400. Catalogue responses carry `ETag` and `Last-Modified` and answer `If-None-Match` with 304.
"""


@contextmanager
def _startup_lock(settings: Settings, engine):
    """Several workers may start at once: only one migrates and loads the catalogue at a time."""
    if settings.is_sqlite:
        import fcntl

        settings.var_dir.mkdir(parents=True, exist_ok=True)
        with open(settings.var_dir / ".startup.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        from sqlalchemy import text

        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(4262021)"))
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(4262021)"))
                conn.commit()


def prepare_database(app: FastAPI) -> None:
    """Migrate to head and load data/ when the catalogue is empty (first start)."""
    from sqlalchemy import text

    from .catalog.sync import sync
    from .migrate import upgrade

    settings: Settings = app.state.settings
    with _startup_lock(settings, app.state.engine):
        upgrade(app.state.engine)
        with app.state.engine.connect() as conn:
            empty = conn.execute(text("SELECT count(*) FROM techniques")).scalar_one() == 0
        if empty:
            report = sync(app.state.engine, settings.knowledge_dir)
            log.info("loaded the catalogue: %s", report.summary())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.json_logs:
        from .observability import configure_logging

        configure_logging(settings.log_level.upper())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.run_prestart:
            app.state.runs.pool.start()
        if settings.sync_on_start:
            prepare_database(app)
            app.state.catalogue.current()  # build the read model before the first request
        citations.start_warming(app)  # formatted references and exports, in the background
        yield
        app.state.catalogue.close()
        await app.state.runs.close()
        app.state.engine.dispose()

    app = FastAPI(title="Attention Atlas", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  dependencies=[Depends(forbid_unknown_query)], docs_url=None,
                  redoc_url=None)  # /docs is served by api/health.py; ReDoc would need a CDN
    app.state.settings = settings
    app.state.engine = make_engine(settings)
    app.state.runs = RunService(settings)
    app.state.shm_regions = {}
    app.state.metrics = Metrics()
    readmodel.install(app)  # the catalogue snapshot; its 304 answers still pass the request middleware
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    errors.install(app)
    openapi.install(app)
    for module in (techniques, taxonomy, run, oip, citations, admin, health, ops, web, costs):
        app.include_router(module.router)
    web.mount_static(app)
    return app
