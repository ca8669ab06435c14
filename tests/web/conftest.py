"""Fixtures of the page tests: the shared read-only app with its static files mounted, and DB access."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from service.api.web import mount_static


@pytest.fixture(scope="module")
def web(client):
    """The module's app client, serving /static as the deployed app does."""
    mount_static(client.app)
    return client


@pytest.fixture
def db(web):
    with Session(web.app.state.engine) as session:
        yield session
