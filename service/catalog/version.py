"""The catalogue version: a token in the database that changes with every write to the catalogue
(techniques, references, taxonomy), so that every worker and replica can tell cheaply whether what it
derived from the catalogue (caches, snapshots) is still current.

Every write path calls :func:`bump_catalogue_version` in its own transaction; readers call
:func:`catalogue_version` (one primary-key lookup). The token is random rather than a counter, so a
restored backup never reuses the number of a later state.
"""

from __future__ import annotations

import uuid

from sqlmodel import Session

from ..models import Meta

KEY = "catalogue_version"
UNVERSIONED = "0"  # a database written before versions existed


def catalogue_version(session: Session) -> str:
    row = session.get(Meta, KEY)
    return row.value if row is not None else UNVERSIONED


def bump_catalogue_version(session: Session) -> str:
    """Give the catalogue a new version within the caller's transaction; returns it."""
    value = uuid.uuid4().hex
    row = session.get(Meta, KEY)
    if row is None:
        session.add(Meta(key=KEY, value=value))
    else:
        row.value = value
    return value
