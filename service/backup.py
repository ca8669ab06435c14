"""Consistent copies of a live SQLite database through SQLite's online backup API."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .settings import Settings


def backup(settings: Settings, dest: Path) -> Path:
    if not settings.is_sqlite:
        raise SystemExit("db backup copies the SQLite database; for PostgreSQL use pg_dump")
    src_path = settings.url.removeprefix("sqlite:///")
    if not Path(src_path).exists():
        raise SystemExit(f"no database at {src_path}")
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".partial")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(tmp)
        try:
            src.backup(out, pages=256)  # copies page by page; writers may continue meanwhile
            out.execute("PRAGMA journal_mode=DELETE")
        finally:
            out.close()
    finally:
        src.close()
    tmp.replace(dest)
    return dest
