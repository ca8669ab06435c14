"""The catalogue version: one counter in the database, raised in the same transaction as every write to
the catalogue (sync, technique edits, reference imports). Whatever a process derives from the catalogue
(the in-memory read model, caches of formatted references) is current exactly while the version it was
built from is the stored one, so every worker and replica sees a change as soon as it is committed.

- ``catalogue_version(session)``: the stored version (one primary-key lookup).
- ``bump(session)``: raise it inside the caller's transaction.
- ``VersionProbe``: the same lookup on a connection of its own, for checks on every request.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

_READ = text("SELECT version FROM catalogue_version WHERE id = 1")
_BUMP = text("UPDATE catalogue_version SET version = version + 1 WHERE id = 1")
_SEED = text("INSERT INTO catalogue_version (id, version) VALUES (1, 2)")
_RAW_READ = "SELECT version FROM catalogue_version WHERE id = 1"


def catalogue_version(session: Session | Connection) -> int:
    """The version of the catalogue as the caller's transaction sees it (0 before the first write)."""
    value = session.execute(_READ).scalar_one_or_none()
    return int(value) if value is not None else 0


def bump(session: Session | Connection) -> None:
    """Raise the version in the caller's transaction: readers see the new version exactly when they can see
    the write. On PostgreSQL the row lock also orders concurrent writers."""
    if session.execute(_BUMP).rowcount == 0:  # a database whose row was removed by hand
        session.execute(_SEED)


class DedicatedConnection:
    """One long-lived DBAPI connection of its own, outside the pool and outside any transaction (each
    statement sees the newest commit), for statements run on every request: no pool checkout, no ORM.
    Thread-safe; the connection is reopened after an error."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._lock = threading.Lock()
        self._conn: Any = None

    def _connect(self) -> Any:
        fairy = self._engine.raw_connection()
        if self._engine.dialect.name == "postgresql":
            fairy.driver_connection.autocommit = True  # each statement sees the newest commit
        fairy.detach()  # ours alone from now on: the pool opens another one for sessions
        return fairy

    def fetchall(self, sql: str, params: tuple = (), retry: bool = True) -> list[tuple]:
        """Rows of one statement. With ``retry``, a failure on a connection that was fine before (the server
        restarted, the file was replaced) is retried once on a new connection. Without, the error is raised
        and the connection kept (for statements that may fail on their input, such as a search)."""
        with self._lock:
            for attempt in (1, 2):
                fresh = self._conn is None
                try:
                    if fresh:
                        self._conn = self._connect()
                    cur = self._conn.cursor()
                    try:
                        cur.execute(sql, params)
                        return cur.fetchall()
                    finally:
                        cur.close()
                except Exception:
                    if not retry:
                        raise
                    self._close_locked()
                    if attempt == 2 or fresh:
                        raise
            raise AssertionError("unreachable")

    def _close_locked(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close
                pass

    def close(self) -> None:
        with self._lock:
            self._close_locked()


class VersionProbe:
    """Reads the stored version on a dedicated connection: one primary-key lookup per check."""

    def __init__(self, engine: Engine):
        self.connection = DedicatedConnection(engine)

    def read(self) -> int:
        rows = self.connection.fetchall(_RAW_READ)
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        self.connection.close()
