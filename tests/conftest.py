"""Shared fixtures: a real database (SQLite file always; PostgreSQL too when ATLAS_TEST_POSTGRES_URL is
set) migrated and loaded from data/, and the real app behind an httpx-based client."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.db import make_engine
from service.main import create_app
from service.migrate import upgrade
from service.settings import REPO_DATA, Settings

PG_URL = os.environ.get("ATLAS_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _fresh_pg_database() -> str:
    """A new, empty PostgreSQL database for one test module."""
    name = f"atlas_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    base, _, _ = PG_URL.rpartition("/")
    return f"{base}/{name}"


def make_settings(tmp: Path, backend: str = "sqlite", **overrides) -> Settings:
    url = f"sqlite:///{tmp / 'atlas.db'}" if backend == "sqlite" else _fresh_pg_database()
    overrides.setdefault("warm_citations", False)  # no background rendering competing with the tests
    return Settings(database_url=url, var_dir=tmp, knowledge_dir=overrides.pop("knowledge_dir", REPO_DATA),
                    **overrides)


@pytest.fixture(scope="session")
def knowledge_dir() -> Path:
    return REPO_DATA


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def client(tmp_path_factory, backend):
    """The real app on a database loaded from data/ (read-only tests share it per module)."""
    settings = make_settings(tmp_path_factory.mktemp("db"), backend)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def fresh_settings(tmp_path, backend):
    """Settings for an empty database of the current backend, for tests that write."""
    return make_settings(tmp_path, backend)


@pytest.fixture
def migrated_engine(fresh_settings):
    """An engine on that empty database, migrated to the newest revision; disposed afterwards."""
    engine = make_engine(fresh_settings)
    upgrade(engine)
    yield engine
    engine.dispose()
