"""Catalogue reads: the service against Datasette on a copy of the same SQLite file, driven by wrk.

Builds the database from data/, serves it with the service (one worker; two workers as a second server;
and one worker that keeps no response bodies or search answers, so that every request is built as if it
were new) and with Datasette (facet suggestions off, full-text search configured on the same
words), checks that every request answers what it should, then runs wrk for each request at 1, 8 and 32
connections, alternating the servers request by request so that load from elsewhere on the machine
hits all of them alike. Prints req/s, p99 latency and the ratios. With ATLAS_TEST_POSTGRES_URL set
(scripts/with-postgres.sh) the service also runs on PostgreSQL; Datasette has no PostgreSQL, so those
figures are absolute.

    python bench/bench_catalog.py                  # about 6 minutes
    python bench/bench_catalog.py --duration 2 --connections 8,32
    bash scripts/with-postgres.sh python bench/bench_catalog.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from _support import free_port

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIELDS = "slug,name,year"
# (label, service path, Datasette path): the three requests
REQUESTS = [
    ("list", f"/techniques?subcategory=channel&limit=20&fields={FIELDS}",
     "/atlas/techniques.json?subcategory_id=channel&_size=20&_col=name&_col=year"),
    ("search", f"/techniques?q=attention&limit=20&fields={FIELDS}",
     "/atlas/techniques.json?_search=attention&_size=20&_col=name&_col=year"),
    ("row", "/techniques/squeeze-and-excitation", "/atlas/techniques/squeeze-and-excitation.json"),
]
FULL_LIST = "/techniques?limit=20"  # twenty whole records: the 304's counterpart


def wait_ready(base: str, path: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {base} exited with {proc.returncode}")
        try:
            if httpx.get(base + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{base} did not become ready")


def build_database(where: Path, url: str | None = None) -> str:
    from service.catalog.sync import sync
    from service.db import make_engine
    from service.migrate import upgrade
    from service.settings import REPO_DATA, Settings

    settings = Settings(database_url=url or f"sqlite:///{where / 'atlas.db'}", var_dir=where)
    engine = make_engine(settings)
    upgrade(engine)
    sync(engine, REPO_DATA)
    engine.dispose()
    return settings.url


def datasette_copy(src: Path, dest: Path) -> Path:
    """A copy of the service's database (SQLite backup API) with the search words in the form Datasette
    searches: an FTS5 table whose rowids are the techniques' rowids."""
    a, b = sqlite3.connect(src), sqlite3.connect(dest)
    a.backup(b)
    a.close()
    b.execute("PRAGMA journal_mode=DELETE")
    b.execute("CREATE VIRTUAL TABLE techniques_search USING fts5(name, aliases, summary, strengths, limitations, "
              "applications, tokenize='porter unicode61')")
    b.execute("INSERT INTO techniques_search (rowid, name, aliases, summary, strengths, limitations, applications) "
              "SELECT t.rowid, f.name, f.aliases, f.summary, f.strengths, f.limitations, f.applications "
              "FROM technique_fts f JOIN techniques t ON t.slug = f.slug")
    b.commit()
    b.close()
    return dest


@dataclass
class Server:
    name: str
    base: str
    proc: subprocess.Popen

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_service(name: str, url: str, var: Path, workers: int, extra: dict[str, str]) -> Server:
    port = free_port()
    env = {**os.environ, "ATLAS_DATABASE_URL": url, "ATLAS_VAR_DIR": str(var), "PYTHONPATH": str(REPO), **extra}
    env.pop("ATLAS_TEST_POSTGRES_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", str(workers), "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(name, f"http://127.0.0.1:{port}", proc)
    wait_ready(server.base, "/readyz", proc)
    return server


def start_datasette(db: Path, var: Path) -> Server:
    port = free_port()
    meta = var / "metadata.json"
    meta.write_text(json.dumps({"databases": {"atlas": {"tables": {"techniques": {
        "fts_table": "techniques_search", "fts_pk": "rowid"}}}}}))
    exe = shutil.which("datasette", path=str(Path(sys.executable).parent)) or "datasette"
    proc = subprocess.Popen([exe, "serve", str(db), "-h", "127.0.0.1", "-p", str(port), "-m", str(meta),
                             "--setting", "suggest_facets", "off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server("datasette", f"http://127.0.0.1:{port}", proc)
    wait_ready(server.base, "/atlas.json", proc)
    return server


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk(url: str, connections: int, duration: int, headers: dict[str, str] | None = None) -> tuple[float, float, int]:
    """(requests/s, p99 in ms, responses that were not 2xx/3xx)."""
    cmd = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    p99 = float(m.group(1)) * _UNITS[m.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*timeout (\d+)", out)
    return rps, p99, (int(bad.group(1)) if bad else 0) + (int(errors.group(1)) if errors else 0)


def check(atlas: Server, ds: Server | None) -> dict[str, str]:
    """Every request answers what it should; returns the ETag of each service request."""
    etags = {}
    for label, path, ds_path in REQUESTS + [("full", FULL_LIST, None)]:
        r = httpx.get(atlas.base + path)
        assert r.status_code == 200, (atlas.name, path, r.status_code, r.text[:200])
        body = r.json()
        assert body.get("items") or body.get("slug"), (atlas.name, path)
        etags[label] = r.headers["etag"]
        assert httpx.get(atlas.base + path, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
        if ds is not None and ds_path:
            d = httpx.get(ds.base + ds_path)
            assert d.status_code == 200 and d.json().get("rows"), (ds_path, d.status_code, d.text[:300])
    return etags


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=2, help="seconds of load per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="measurements per server and request, alternated")
    ap.add_argument("--connections", default="1,8,32", help="comma-separated connection counts")
    ap.add_argument("--no-workers2", action="store_true", help="skip the two-worker service")
    ap.add_argument("--no-built", action="store_true",
                    help="skip the service that builds every response (no response bodies or searches kept)")
    ap.add_argument("--search-cache", type=int, default=None,
                    help="ATLAS_CATALOG_SEARCH_CACHE for the service (0: every search asks the engine)")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    conns = [int(c) for c in args.connections.split(",")]
    pg_admin = os.environ.get("ATLAS_TEST_POSTGRES_URL")

    tmp = Path(tempfile.mkdtemp(prefix="atlas-bench-"))
    servers: list[Server] = []
    try:
        print("building the database from data/ ...", flush=True)
        (tmp / "service").mkdir()
        (tmp / "ds").mkdir()
        url = build_database(tmp / "service")
        ds_db = datasette_copy(tmp / "service" / "atlas.db", tmp / "ds" / "atlas.db")
        extra = {} if args.search_cache is None else {"ATLAS_CATALOG_SEARCH_CACHE": str(args.search_cache)}
        services = [start_service("atlas", url, tmp / "v1", 1, extra)]
        if not args.no_workers2:
            services.append(start_service("atlas-w2", url, tmp / "v2", 2, extra))
        if not args.no_built:
            services.append(start_service("atlas-built", url, tmp / "v3", 1, {
                **extra, "ATLAS_CATALOG_RESPONSE_CACHE_BYTES": "0", "ATLAS_CATALOG_SEARCH_CACHE": "0"}))
        if pg_admin:
            from sqlalchemy import create_engine, text

            name = f"atlas_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(pg_admin, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            pg_url = build_database(tmp, pg_admin.rpartition("/")[0] + "/" + name)
            services.append(start_service("atlas-pg", pg_url, tmp / "vpg", 1, extra))
        ds = start_datasette(ds_db, tmp / "ds")
        servers = [*services, ds]
        etags = {s.name: check(s, ds) for s in services}
        print(f"load generator: {subprocess.run(['wrk', '-v'], capture_output=True, text=True).stdout.split()[1]} "
              f"(wrk), {args.rounds} x {args.duration} s per server and request, servers alternated; service search "
              f"cache: {'default' if args.search_cache is None else args.search_cache}\n", flush=True)

        results: dict[tuple[str, str, int], tuple[float, float, int]] = {}
        load_start = os.getloadavg()[0]
        plan = [(label, {s.name: path for s in services} | {"datasette": ds_path}, None)
                for label, path, ds_path in REQUESTS]
        plan += [("full", {s.name: FULL_LIST for s in services}, None),
                 ("304", {s.name: FULL_LIST for s in services}, "full")]
        for label, paths, etag_of in plan:
            for c in conns:
                order = [s for s in servers if s.name in paths]
                runs: dict[str, list[tuple[float, float, int]]] = {s.name: [] for s in order}
                for r in range(args.rounds):
                    for server in order if (r + c) % 2 == 0 else list(reversed(order)):  # alternate the order
                        url = server.base + paths[server.name]
                        headers = {"If-None-Match": etags[server.name][etag_of]} if etag_of else None
                        if r == 0 and c == conns[0]:
                            wrk(url, c, 1, headers)  # warm-up
                        runs[server.name].append(wrk(url, c, args.duration, headers))
                for name, got in runs.items():  # mean throughput, worst p99, all errors
                    results[(label, name, c)] = (sum(g[0] for g in got) / len(got), max(g[1] for g in got),
                                                 sum(g[2] for g in got))
        report(results, services, conns)
        print(f"load average (1 min) at the start and the end: {load_start:.1f}, {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(results, services: list[Server], conns: list[int]) -> None:
    names = [s.name for s in services]
    print(f"{'request':8} {'conns':>5} | {'datasette':>16} | " + " | ".join(f"{n:>28}" for n in names))
    print(f"{'':8} {'':>5} | {'req/s   p99 ms':>16} | " + " | ".join(f"{'req/s   p99 ms  vs datasette':>28}"
                                                                 for _ in names))
    for label in ("list", "search", "row", "full", "304"):
        for c in conns:
            ds = results.get((label, "datasette", c))
            cells = []
            for n in names:
                rps, p99, bad = results[(label, n, c)]
                ratio = f"{rps / ds[0]:5.2f}x" if ds else "      "
                cells.append(f"{rps:7.0f} {p99:7.2f}  {ratio:>6}{' ERR' + str(bad) if bad else ''}")
            left = f"{ds[0]:7.0f} {ds[1]:7.2f}{' ERR' + str(ds[2]) if ds[2] else ''}" if ds else ""
            print(f"{label:8} {c:>5} | {left:>16} | " + " | ".join(f"{x:>28}" for x in cells))
    print()
    for n in names:
        ratios = [f"{results[('304', n, c)][0] / results[('full', n, c)][0]:.1f}x @{c}" for c in conns]
        small = [f"{results[('304', n, c)][0] / results[('list', n, c)][0]:.1f}x @{c}" for c in conns]
        print(f"{n}: 304 vs full list (limit=20, whole records): {', '.join(ratios)}; "
              f"vs the fields list: {', '.join(small)}")
    print("\ntargets: service/Datasette >= 1.5 at 8 and 32 connections; p99 < 25 ms at 32; 304 >= 3x a full list")


if __name__ == "__main__":
    sys.exit(main())
