"""The ``attention-atlas`` command: serve, db migrate|sync|backup, keys new|hash."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .settings import Settings


def _serve(args, settings: Settings) -> int:
    import os

    import uvicorn

    # worker processes build the app from the environment: JSON logs in each of them
    os.environ["ATLAS_JSON_LOGS"] = "true"
    os.environ["ATLAS_LOG_LEVEL"] = args.log_level
    uvicorn.run("service.main:create_app", factory=True, host=args.host or settings.host,
                port=args.port or settings.port, workers=args.workers, timeout_graceful_shutdown=30,
                log_config=None, log_level=args.log_level, access_log=False)
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


def _keys_new(args, _settings: Settings) -> int:
    from .auth import make_entry, new_key

    key = new_key()
    try:
        entry = make_entry(args.name, args.role, key)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"key:     {key}")
    print(f"setting: {entry.settings_entry()}")
    print("Give the key to its user (it is shown only this once); add the setting to ATLAS_API_KEYS "
          "(entries separated by commas).", file=sys.stderr)
    return 0


def _keys_hash(args, _settings: Settings) -> int:
    from .auth import hash_key, make_entry

    if sys.stdin.isatty():
        from getpass import getpass

        key = getpass("key: ").strip()
    else:
        key = sys.stdin.readline().strip()
    if not key:
        print("send the key on standard input, e.g. `echo \"$KEY\" | attention-atlas keys hash`", file=sys.stderr)
        return 2
    if not args.name:
        print(hash_key(key))
        return 0
    try:
        print(make_entry(args.name, args.role, key).settings_entry())
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attention-atlas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service (migrates and loads data/ on first start)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1, help="processes (use PostgreSQL for more than one)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)
    db = sub.add_parser("db", help="database operations").add_subparsers(dest="db_command", required=True)
    db.add_parser("migrate", help="upgrade the database schema to the newest migration").set_defaults(func=_migrate)
    s = db.add_parser("sync", help="validate data/ and load it into the database in one transaction")
    s.add_argument("--data", help="knowledge folder (default: the settings' knowledge_dir)")
    s.set_defaults(func=_sync)
    b = db.add_parser("backup", help="write a consistent copy of the live SQLite database to PATH")
    b.add_argument("path")
    b.set_defaults(func=_backup)
    keys = sub.add_parser("keys", help="API keys for the write API").add_subparsers(dest="keys_command",
                                                                                   required=True)
    kn = keys.add_parser("new", help="make a random key and print it with its ATLAS_API_KEYS entry")
    kn.add_argument("name", help="who or what uses the key (letters, digits, '_', '.', '-')")
    kn.add_argument("--role", choices=("write", "read"), default="write")
    kn.set_defaults(func=_keys_new)
    kh = keys.add_parser("hash", help="print the SHA-256 of a key read from standard input (with --name: its "
                                      "ATLAS_API_KEYS entry)")
    kh.add_argument("--name", help="print the whole 'name:role:sha256hex' entry")
    kh.add_argument("--role", choices=("write", "read"), default="write")
    kh.set_defaults(func=_keys_hash)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args, Settings())


if __name__ == "__main__":
    raise SystemExit(main())
