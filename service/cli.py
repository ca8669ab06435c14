"""The ``attention-atlas`` command: serve, db migrate|sync|backup."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .settings import Settings


def _serve(args, settings: Settings) -> int:
    import uvicorn

    uvicorn.run("service.main:create_app", factory=True, host=args.host or settings.host,
                port=args.port or settings.port, workers=args.workers, timeout_graceful_shutdown=30,
                log_level="info")
    return 0


def _migrate(_args, settings: Settings) -> int:
    from .db import make_engine
    from .migrate import upgrade

    upgrade(make_engine(settings))
    print("database at the newest migration")
    return 0


def _sync(args, settings: Settings) -> int:
    from .catalog.loader import CatalogInvalid
    from .catalog.sync import sync
    from .db import make_engine
    from .migrate import upgrade

    engine = make_engine(settings)
    upgrade(engine)
    try:
        report = sync(engine, Path(args.data or settings.knowledge_dir))
    except CatalogInvalid as exc:
        print(f"sync refused, nothing written: {len(exc.problems)} problem(s)", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def _backup(args, settings: Settings) -> int:
    from .backup import backup

    path = backup(settings, Path(args.path))
    print(f"backup written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attention-atlas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service (migrates and loads data/ on first start)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_serve)
    db = sub.add_parser("db", help="database operations").add_subparsers(dest="db_command", required=True)
    db.add_parser("migrate", help="upgrade the database schema to the newest migration").set_defaults(func=_migrate)
    s = db.add_parser("sync", help="validate data/ and load it into the database in one transaction")
    s.add_argument("--data", help="knowledge folder (default: the settings' knowledge_dir)")
    s.set_defaults(func=_sync)
    b = db.add_parser("backup", help="write a consistent copy of the live SQLite database to PATH")
    b.add_argument("path")
    b.set_defaults(func=_backup)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args, Settings())


if __name__ == "__main__":
    raise SystemExit(main())
