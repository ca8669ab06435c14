"""The reference library as the citation routes read it: only the references a request needs, export
keys computed once per catalogue version, and response bodies cached by catalogue version.

A citation or an export for N techniques looks up N references by key (the primary key index), never
the whole library; the export-key map (which must see every key so that keys never collide) is built
once per catalogue version and shared by all requests. Bodies (BibTeX, RIS, CSL-JSON, formatted
references) are cached per (catalogue version, citation keys, format, style, locale, options), so a
formatted reference is rendered once per style, locale and output until the catalogue changes.
:func:`warm` fills the cache for the whole library in every format and style; the app runs it in a
background thread at start.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from ..catalog.version import catalogue_version
from ..models import Reference, Technique
from . import bibtex

log = logging.getLogger("service.citations")

_IN_CHUNK = 500  # keys per IN (...) query


@dataclass(frozen=True)
class KeyMap:
    version: int
    keys: dict[str, str]  # citekey -> export key
    last_modified: datetime | None


class BodyCache:
    """A bounded LRU of response bodies; every key starts with the catalogue version, so a new version
    simply stops hitting the old entries, which age out."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_or_make(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            body = self._items.get(key)
            if body is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return body
            self.misses += 1
        body = make()
        if len(body) <= self.max_bytes // 4:
            with self._lock:
                old = self._items.pop(key, None)
                self._bytes -= len(old) if old is not None else 0
                self._items[key] = body
                self._bytes += len(body)
                while self._bytes > self.max_bytes and self._items:
                    _, dropped = self._items.popitem(last=False)
                    self._bytes -= len(dropped)
        return body

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


class Library:
    """Per-process state of the citation routes (one per app)."""

    def __init__(self, cache_bytes: int = 64 << 20):
        self.bodies = BodyCache(cache_bytes)
        self._keymap: KeyMap | None = None
        self._lock = threading.Lock()

    # --- export keys ---------------------------------------------------------------------------------

    def keymap(self, session: Session, version: int | None = None) -> KeyMap:
        if version is None:
            version = catalogue_version(session)
        current = self._keymap
        if current is not None and current.version == version:
            return current
        with self._lock:
            current = self._keymap
            if current is not None and current.version == version:
                return current
            current = KeyMap(version, _export_keys(session), _last_modified(session))
            self._keymap = current
            return current

    # --- references ----------------------------------------------------------------------------------

    def works(self, session: Session, citekeys: Iterable[str] | None, keymap: KeyMap) -> list[bibtex.Work]:
        """Works for the given citekeys (None: the whole library), ordered by export key. Only the
        references asked for are read."""
        if citekeys is None:
            refs = list(session.execute(select(Reference)).scalars())
        else:
            refs = fetch(session, citekeys)
        works = [bibtex.work_from(r, keymap.keys.get(r.citekey, r.citekey)) for r in refs]
        return sorted(works, key=lambda w: w.key.lower())


def fetch(session: Session, citekeys: Iterable[str]) -> list[Reference]:
    wanted = sorted(set(citekeys))
    out: list[Reference] = []
    for i in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[i:i + _IN_CHUNK]
        out += session.execute(select(Reference).where(Reference.citekey.in_(chunk))).scalars()
    return out


def _export_keys(session: Session) -> dict[str, str]:
    """The export key of every reference (Better BibTeX's rules, :func:`bibtex.assign_keys`). Only the
    keys are read, plus the few rows whose stored key is not a usable BibTeX key."""
    citekeys = list(session.execute(select(Reference.citekey)).scalars())
    irregular = [k for k in citekeys if not bibtex.usable_key(k)]
    rows = {r.citekey: r for r in fetch(session, irregular)} if irregular else {}
    return bibtex.assign_export_keys(citekeys, {k: bibtex.generated_key(r) for k, r in rows.items()})


def _last_modified(session: Session) -> datetime | None:
    from ..catalog import query

    stamps = [session.execute(select(func.max(Technique.updated_at))).scalar_one_or_none(),
              session.execute(select(func.max(Reference.updated_at))).scalar_one_or_none()]
    present = [query.aware(s) for s in stamps if s is not None]
    return max(present) if present else None


def warm(engine: Engine, library: Library, bodies: Callable[[Session, KeyMap], None]) -> None:
    """Fill the caches (``bodies`` renders what should be ready); errors are logged, never raised."""
    try:
        with Session(engine) as session:
            keymap = library.keymap(session)
            bodies(session, keymap)
        log.info("citation cache warm: %d bodies", len(library.bodies._items))
    except Exception:  # noqa: BLE001 - a cold cache is slower, not wrong
        log.exception("warming the citation cache failed")
