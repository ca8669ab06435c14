"""The ``attention-atlas`` command: serve, db migrate|sync|backup, keys new|hash."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .costs import command as costs_command
from .settings import Settings


def _serve(args, settings: Settings) -> int:
    import os

    import uvicorn

    # worker processes build the app from the environment: JSON logs in each of them
    os.environ["ATLAS_JSON_LOGS"] = "true"
    os.environ["ATLAS_LOG_LEVEL"] = args.log_level
    os.environ.setdefault("ATLAS_RUN_PRESTART", "true")  # workers warm up while the catalogue loads
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


def _export(args, settings: Settings) -> int:
    """The same export as GET /export, computed in-process from the database (loaded on first use)."""
    from fastapi.testclient import TestClient

    from .main import create_app

    params: list[tuple[str, str]] = [("format", args.format)]
    for name in ("style", "locale", "category", "subcategory", "q", "year_min", "year_max"):
        value = getattr(args, name)
        if value is not None:
            params.append((name, str(value)))
    params += [("application", tag) for tag in args.application or []]
    if args.unicode:
        params.append(("unicode", "true"))
    with TestClient(create_app(settings), raise_server_exceptions=True) as client:
        response = client.get("/export", params=params)
    if response.status_code != 200:
        print(response.json()["error"]["message"], file=sys.stderr)
        return 1
    if args.output:
        Path(args.output).write_bytes(response.content)
        print(f"wrote {args.output} ({len(response.content)} bytes)", file=sys.stderr)
    else:
        sys.stdout.write(response.text)
    return 0


def _run(args, settings: Settings) -> int:
    """Run a mechanism on .npy or .safetensors inputs; write outputs and attention maps as safetensors."""
    import json
    import time

    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from .mechanisms import registry, runtime
    from .mechanisms.base import MechanismInputError

    mech = registry.get(args.slug)
    if mech is None:
        print(f"no implementation for '{args.slug}'; known: {', '.join(sorted(registry.all_mechanisms()))}",
              file=sys.stderr)
        return 2
    inputs: dict[str, torch.Tensor] = {}
    for item in args.input:
        name, _, path = item.rpartition("=")
        if path.endswith(".safetensors"):
            inputs.update(load_file(path))
        else:
            inputs[name or mech.inputs[0].name] = torch.from_numpy(np.load(path, allow_pickle=False))
    try:
        params = json.loads(args.hyperparameters) if args.hyperparameters else {}
        start = time.perf_counter()
        out = runtime.run(mech, inputs, params, seed=args.seed, need_weights=not args.no_attention)
    except (MechanismInputError, json.JSONDecodeError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    elapsed = (time.perf_counter() - start) * 1000
    for name, tensor in out.items():
        print(f"{name:>20}  {list(tensor.shape)}  {str(tensor.dtype).removeprefix('torch.')}")
    print(f"{mech.slug}: {elapsed:.1f} ms (build and forward)")
    if args.output:
        save_file({k: v.contiguous() for k, v in out.items()}, args.output)
        print(f"wrote {args.output}")
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
    e = sub.add_parser("export", help="citations of the whole library or a filtered set (as GET /export)")
    e.add_argument("--format", default="bibtex",
                   help="bibtex, biblatex, ris, csl-json, text or html (formatted references)")
    e.add_argument("--style", help="citation style for text/html, e.g. apa, ieee")
    e.add_argument("--locale")
    e.add_argument("--category")
    e.add_argument("--subcategory")
    e.add_argument("--application", action="append")
    e.add_argument("--q", help="full-text search")
    e.add_argument("--year-min", dest="year_min", type=int)
    e.add_argument("--year-max", dest="year_max", type=int)
    e.add_argument("--unicode", action="store_true", help="UTF-8 instead of LaTeX escapes in BibTeX")
    e.add_argument("--output", "-o")
    e.set_defaults(func=_export)
    r = sub.add_parser("run", help="run a mechanism on local tensors (.npy or .safetensors)")
    r.add_argument("slug")
    r.add_argument("--input", "-i", action="append", required=True,
                   help="NAME=path.npy, path.npy (first input) or path.safetensors (named tensors)")
    r.add_argument("--hyperparameters", help='JSON object, e.g. \'{"reduction": 8}\'')
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--no-attention", action="store_true", help="output only (may take a fused kernel)")
    r.add_argument("--output", "-o", help="write the outputs as .safetensors")
    r.set_defaults(func=_run)
    costs_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args, Settings())


if __name__ == "__main__":
    raise SystemExit(main())
