"""The read model: an immutable in-memory snapshot of the public catalogue, built from the database and
replaced whenever the catalogue version changes.

A snapshot holds, for every technique, its public JSON as bytes, one pre-serialised ``"field":value``
fragment per field (for ``fields=`` selections and list rows), its ETag and Last-Modified, and the values
the list filters and sorts use; and the taxonomy and applications documents with their validators. Reads
filter, sort and page in memory; full-text search stays in the database engine, which returns the
matching slugs and ranks only.

``SnapshotStore.current()`` checks the stored catalogue version (one indexed lookup, at most once per
``catalog_check_interval_ms``; 0 checks on every call) and rebuilds when it moved, so a write through
any process or replica is seen by the next read everywhere.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from ..errors import ApiError
from ..models import Reference, Technique
from . import query
from .version import VersionProbe, catalogue_version


def dumps(payload: Any) -> bytes:
    """The JSON bytes of a catalogue response: compact, UTF-8 (as ``json.dumps(ensure_ascii=False)``)."""
    return orjson.dumps(payload)


def etag_for(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def derived_etag(base: str, *parts: str) -> str:
    """A strong ETag for a response fully determined by a validated base (content) and request parts."""
    h = hashlib.sha256(base.encode())
    for p in parts:
        h.update(b"\0" + p.encode("utf-8", "surrogateescape"))
    return '"' + h.hexdigest()[:32] + '"'


def http_date(stamp: datetime | None) -> str | None:
    return format_datetime(stamp, usegmt=True) if stamp is not None else None


@dataclass(frozen=True, slots=True)
class Resource:
    """A document served whole, with its validators."""

    body: bytes
    etag: str
    last_modified: datetime | None
    last_modified_http: str | None


@dataclass(frozen=True, slots=True)
class Entry:
    """One technique: its public JSON and the values filters and sorts read."""

    slug: str
    name: str
    year: int
    category: str
    subcategory: str
    also_in: frozenset[str]
    applications: frozenset[str]
    has_implementation: bool
    resource: Resource
    fragments: dict[str, bytes]  # field -> b'"field":<json>'

    def row(self, fields: list[str] | None, rank: float | None = None) -> bytes:
        """The JSON object of this technique as a list row or a GET with ``fields``."""
        if fields:
            body = b"{" + b",".join([self.fragments[f] for f in fields]) + b"}"
        else:
            body = self.resource.body
        if rank is not None:
            body = body[:-1] + (b',"score":' if len(body) > 2 else b'"score":') + dumps(round(-rank, 6)) + b"}"
        return body


# sort name -> (attribute, descending)
SORT_KEYS: dict[str, tuple[str, bool]] = {"name": ("name", False), "-name": ("name", True), "year": ("year", False),
                                          "-year": ("year", True), "slug": ("slug", False)}


class ResponseCache:
    """Bodies of 200 responses built from one snapshot, keyed by (path, query string), within a byte budget.
    Used from the event loop only. When a new body would pass the budget the older half goes; a body over
    an eighth of the budget is not kept."""

    __slots__ = ("bodies", "size")

    def __init__(self) -> None:
        self.bodies: dict[tuple[str, bytes], tuple[str, str | None, bytes]] = {}  # ETag, Last-Modified, body
        self.size = 0

    @staticmethod
    def _cost(key: tuple[str, bytes], body: bytes) -> int:
        return len(body) + len(key[0]) + len(key[1]) + 200  # the tuple, dict slot and ETag, roughly

    def get(self, key: tuple[str, bytes]) -> tuple[str, str | None, bytes] | None:
        return self.bodies.get(key)

    def keep(self, key: tuple[str, bytes], etag: str, last_modified_http: str | None, body: bytes,
             budget: int) -> None:
        cost = self._cost(key, body)
        if cost > budget // 8 or key in self.bodies:
            return
        if self.size + cost > budget:
            for old in list(self.bodies)[: len(self.bodies) // 2 + 1]:
                self.size -= self._cost(old, self.bodies.pop(old)[2])
        self.bodies[key] = (etag, last_modified_http, body)
        self.size += cost


@dataclass(frozen=True)
class Snapshot:
    version: int
    digest: str  # content digest: equal content gives equal validators in every process
    entries: dict[str, Entry]
    orders: dict[str, tuple[Entry, ...]]  # each sort of SORT_KEYS, ties by slug
    taxonomy: Resource
    applications: Resource
    last_modified: datetime | None
    last_modified_http: str | None
    built_in_s: float
    # the engine's answers to searches made against this snapshot: a new version starts a new one
    searches: dict[str, dict[str, float]] = field(default_factory=dict, compare=False, repr=False)
    # response bodies built from this snapshot, by exact request: equal requests give equal bytes
    responses: ResponseCache = field(default_factory=lambda: ResponseCache(), compare=False, repr=False)

    def entry(self, slug: str) -> Entry:
        e = self.entries.get(slug)
        if e is None:
            import difflib

            close = difflib.get_close_matches(slug, list(self.entries), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ApiError(404, f"no technique with slug '{slug}'{hint}",
                           details={"did_you_mean": close, "list": "/techniques"})
        return e


def _resource(payload: Any, last_modified: datetime | None) -> Resource:
    body = dumps(payload)
    return Resource(body=body, etag=etag_for(body), last_modified=last_modified,
                    last_modified_http=http_date(last_modified))


def _entry(t: Technique, rel: query.Related) -> Entry:
    public = query.to_public(t, rel)
    stamp = query.aware(t.updated_at)
    return Entry(
        slug=t.slug, name=t.name, year=t.year, category=t.category_id, subcategory=t.subcategory_id,
        also_in=frozenset(t.also_in or ()), applications=frozenset(rel.applications.get(t.slug, ())),
        has_implementation=bool(t.has_implementation), resource=_resource(public, stamp),
        fragments={k: dumps(k) + b":" + dumps(v) for k, v in public.items()})


def build(engine: Engine, attempts: int = 5) -> Snapshot:
    """Read the whole public catalogue. The version is read before and after: equal readings mean no write
    committed in between (every write raises it), so the snapshot is consistent with that version."""
    started = time.perf_counter()
    for _ in range(attempts):
        with Session(engine) as session:
            before = catalogue_version(session)
            techniques = list(session.execute(select(Technique).order_by(Technique.slug)).scalars())
            rel = query.load_related(session, [t.slug for t in techniques])
            entries = {t.slug: _entry(t, rel) for t in techniques}
            tech_latest = max((query.aware(t.updated_at) for t in techniques), default=None)
            ref_latest = session.execute(select(func.max(Reference.updated_at))).scalar_one_or_none()
            stamps = [s for s in (tech_latest, query.aware(ref_latest) if ref_latest else None) if s is not None]
            last_modified = max(stamps) if stamps else None
            taxonomy = _resource(query.taxonomy_payload(session), last_modified)
            applications = _resource(query.applications_payload(session), last_modified)
            after = catalogue_version(session)
        if before == after:
            break
    orders: dict[str, tuple[Entry, ...]] = {}
    by_slug = sorted(entries.values(), key=lambda e: e.slug)
    for sort, (attr, descending) in SORT_KEYS.items():
        # stable sorts: by slug first, then by the key (reverse keeps equal keys in slug order)
        orders[sort] = tuple(sorted(by_slug, key=lambda e, a=attr: getattr(e, a), reverse=descending))
    h = hashlib.sha256()
    for e in by_slug:
        h.update(e.resource.etag.encode())
    for part in (taxonomy.etag, applications.etag, http_date(last_modified) or ""):
        h.update(part.encode())
    return Snapshot(version=before, digest=h.hexdigest(), entries=entries, orders=orders, taxonomy=taxonomy,
                    applications=applications, last_modified=last_modified,
                    last_modified_http=http_date(last_modified), built_in_s=time.perf_counter() - started)


class SnapshotStore:
    """The process's current snapshot, checked against the stored catalogue version."""

    def __init__(self, engine: Engine, check_interval_ms: int = 0,
                 builder: Callable[[Engine], Snapshot] = build, search_cache: int = 256):
        self._engine = engine
        self._search_cache = search_cache
        self._interval = max(0, check_interval_ms) / 1000.0
        self._builder = builder
        self._probe = VersionProbe(engine)
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None
        self._checked_at = float("-inf")

    def current(self) -> Snapshot:
        snap = self._snap
        now = time.monotonic()
        if snap is not None and self._interval and now - self._checked_at < self._interval:
            return snap
        version = self._probe.read()
        self._checked_at = now
        if snap is not None and snap.version == version:
            return snap
        with self._lock:  # one rebuild at a time; others that waited find it done
            snap = self._snap
            if snap is None or snap.version != version:
                snap = self._builder(self._engine)
                self._snap = snap
        return snap

    def search(self, snap: Snapshot, q: str) -> dict[str, float]:
        """The engine's search ranks for ``q`` (on SQLite on the store's own connection: no pool, no ORM).
        Up to ``search_cache`` answers are kept with the snapshot they were asked against, so they are
        dropped with it when the catalogue version moves."""
        ranks = snap.searches.get(q)
        if ranks is None:
            ranks = query.search_ranks(self._engine, q, self._probe.connection)
            if self._search_cache:
                if len(snap.searches) >= self._search_cache:
                    snap.searches.clear()
                snap.searches[q] = ranks
        return ranks

    def peek(self) -> Snapshot | None:
        return self._snap

    def close(self) -> None:
        self._probe.close()


def _matches(e: Entry, flt: query.Filters) -> bool:
    if flt.category and e.category != flt.category:
        return False
    if flt.subcategory and e.subcategory != flt.subcategory and flt.subcategory not in e.also_in:
        return False
    if flt.applications and not e.applications.issuperset(flt.applications):
        return False
    if flt.year_min is not None and e.year < flt.year_min:
        return False
    if flt.year_max is not None and e.year > flt.year_max:
        return False
    if flt.has_implementation is not None and e.has_implementation != flt.has_implementation:
        return False
    return True


@dataclass(frozen=True, slots=True)
class PageOf:
    entries: list[Entry]
    total: int
    next_cursor: str | None
    ranks: dict[str, float]


def select_page(snap: Snapshot, flt: query.Filters, sort: str, limit: int, cursor: str | None,
                ranks: dict[str, float] | None = None) -> PageOf:
    """The page ``query.list_techniques`` returns, from the snapshot: filters, sort (ties by slug), keyset
    paging with the same cursors. ``ranks``: the engine's search result when ``flt.q`` is given."""
    if sort == "relevance" and not flt.q:
        raise ApiError(400, "sort=relevance needs a search query q", details={"parameter": "sort"})
    if flt.q:
        ranks = ranks or {}
        if sort == "relevance":
            hits = sorted((e for s in ranks if (e := snap.entries.get(s)) is not None),
                          key=lambda e: (ranks[e.slug], e.slug))
        else:
            hits = [e for e in snap.orders[sort] if e.slug in ranks]
        rows = [e for e in hits if _matches(e, flt)]
    else:
        ranks = {}
        base = snap.orders[sort]
        rows = list(base) if flt == query.Filters() else [e for e in base if _matches(e, flt)]
    total = len(rows)

    def key_of(e: Entry) -> Any:
        return ranks[e.slug] if sort == "relevance" else getattr(e, SORT_KEYS[sort][0])

    if cursor:
        key, slug = query._decode_cursor(cursor, sort)
        descending = sort.startswith("-")
        def after(e: Entry) -> bool:
            k = key_of(e)
            return (k < key if descending else k > key) or (k == key and e.slug > slug)

        try:
            rows = [e for e in rows if after(e)]
        except TypeError:  # a key of the wrong type for this sort
            raise ApiError(400, "malformed cursor: pass back the next_cursor value of a previous page unchanged",
                           details={"parameter": "cursor"}) from None
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = query._encode_cursor(sort, key_of(last), last.slug)
    return PageOf(entries=page, total=total, next_cursor=next_cursor,
                  ranks={e.slug: ranks[e.slug] for e in page} if flt.q else {})
