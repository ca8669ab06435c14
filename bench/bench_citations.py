"""Citation, note and export latency against the size of the library, formatted whole-library exports
cold and warm, and the cost of decoding LaTeX in imports; prints a table of figures.

* Citation and note latency with the 52 references of data/ and again after 50,000 more references are
  stored (ratio target: at most 1.2). "uncached" clears the response cache before every request (the
  catalogue-version lookup, the reference lookup and the rendering all run); "cached" is the steady state.
* Whole-library formatted exports per style: cold (no cached body and no cached rendering) and warm
  (target: under 100 ms warm), and a filter set not asked for before, assembled from cached entries.
* LaTeX decoding of imported values: a title of repeated ``\\'e `` and a heavy mix of accents, escapes,
  font commands and math, at two sizes (linear: time ratio about equal to the size ratio).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _support import median_time  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from sqlmodel import Session  # noqa: E402

from service.api.citations import library_for  # noqa: E402
from service.catalog.version import bump  # noqa: E402
from service.citations import formatted, importers  # noqa: E402
from service.main import create_app  # noqa: E402
from service.models import Reference, utcnow  # noqa: E402
from service.settings import REPO_DATA, Settings  # noqa: E402

CITATIONS = [  # what a reader asks for: (label, path, params)
    ("citation bibtex", "/techniques/cbam/citation", {"format": "bibtex"}),
    ("citation apa text", "/techniques/cbam/citation", {"format": "text", "style": "apa"}),
    ("citation ieee html", "/techniques/transformer/citation", {"format": "html", "style": "ieee"}),
    ("note.md", "/techniques/non-local/note.md", {}),
    ("export 3 slugs csl", "/export", [("slug", "cbam"), ("slug", "non-local"), ("slug", "transformer"),
                                      ("format", "csl-json")]),
]


def clear_rendering(client) -> None:
    library_for(client.app).bodies.clear()
    formatted.clear_cache()


def citation_figures(small, large, repeat: int) -> dict[str, tuple[float, float, float, float]]:
    """(uncached small, uncached large, cached small, cached large) median ms per request, and the
    minimum under "min <request>" (load from other processes only adds time, so the minimum is the
    steadier figure on a shared machine). The two libraries are measured alternately, request by request,
    so that such load hits both alike."""
    out = {}
    for label, path, params in CITATIONS:
        times: dict[tuple[str, bool], list[float]] = {(w, c): [] for w in ("small", "large") for c in (False, True)}
        for i in range(repeat + 1):
            for which, client in (("small", small), ("large", large)) if i % 2 else (("large", large), ("small", small)):
                for cached in (False, True):
                    if not cached:
                        clear_rendering(client)
                    t = time.perf_counter()
                    r = client.get(path, params=params)
                    elapsed = time.perf_counter() - t
                    assert r.status_code == 200, r.text
                    if i:  # the first round warms up
                        times[(which, cached)].append(elapsed)
        order = (("small", False), ("large", False), ("small", True), ("large", True))
        out[label] = tuple(statistics.median(times[k]) * 1000 for k in order)
        out["min " + label] = tuple(min(times[k]) * 1000 for k in order)
    return out


def add_references(client, n: int) -> None:
    """Store ``n`` more references (straight into the table, as many imports would)."""
    now = utcnow()
    rows = []
    for i in range(n):
        key = f"benchAuthor{i:06d}Attention{2000 + i % 25}"
        rows.append({"citekey": key, "entry_type": "article", "source": "api", "updated_at": now,
                     "fields": {"title": f"Attention Study Number {i}", "journal": "Journal of Benchmarks",
                                "year": str(2000 + i % 25), "volume": str(i % 90)},
                     "persons": {"author": [{"family": f"Author{i:06d}", "given": "Bench"}]},
                     "bibtex": f"@article{{{key},\n  title = {{Attention Study Number {i}}},\n"
                               f"  author = {{Author{i:06d}, Bench}},\n  journal = {{Journal of Benchmarks}},\n"
                               f"  year = {{{2000 + i % 25}}}\n}}"})
    with Session(client.app.state.engine) as s:
        for i in range(0, n, 5000):
            s.execute(insert(Reference), rows[i:i + 5000])
        bump(s)
        s.commit()


def export_figures(client, repeat: int) -> dict[str, tuple[float, float, float | None]]:
    out = {}
    for style in formatted.style_names():
        def get(style=style):
            r = client.get("/export", params={"format": "text", "style": style})
            assert r.status_code == 200
        cold = []
        for _ in range(max(2, repeat // 3)):
            clear_rendering(client)
            t = time.perf_counter()
            get()
            cold.append(time.perf_counter() - t)
        warm_ms = median_time(get, repeat, warmup=1) * 1000

        def new_set(style=style):
            # a filter set not asked for before, once the whole library is rendered: entries from the cache
            library_for(client.app).bodies.clear()
            r = client.get("/export", params={"format": "text", "style": style, "category": "soft"})
            assert r.status_code == 200
        out[style] = (statistics.median(cold) * 1000, warm_ms, median_time(new_set, repeat, warmup=1) * 1000)
    for fmt in ("bibtex", "csl-json", "ris"):
        def get(fmt=fmt):
            assert client.get("/export", params={"format": fmt}).status_code == 200
        def cold_get(get=get):
            clear_rendering(client)
            get()
        out[fmt] = (median_time(cold_get, max(2, repeat // 3), warmup=1) * 1000,
                    median_time(get, repeat, warmup=1) * 1000, None)
    return out


def decoding_figures(quick: bool) -> list[tuple[str, int, float]]:
    heavy_unit = (r"Gr{\"u}n \'{e}t\'e \c{c}a {\L}{\'o}d\'z \textbf{bold} \emph{it} 50\% R\&D --- "
                  r"``quoted'' $\alpha^{2}$ \v{S}koda ")
    sizes = (100_000, 200_000) if quick else (500_000, 1_000_000)
    out = []
    for label, unit in (("\\'e repeated", "\\'e "), ("heavy LaTeX", heavy_unit)):
        for size in sizes:
            value = unit * (size // len(unit))
            t = time.perf_counter()
            importers.decode_latex(value)
            out.append((label, len(value), time.perf_counter() - t))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, 10,000 extra references")
    parser.add_argument("--extra", type=int, default=None, help="references to add (default 50,000)")
    args = parser.parse_args()
    repeat = 5 if args.quick else 15
    extra = args.extra or (10_000 if args.quick else 50_000)

    with tempfile.TemporaryDirectory() as tmp_small, tempfile.TemporaryDirectory() as tmp_large:
        def settings(tmp: str) -> Settings:
            return Settings(database_url=f"sqlite:///{tmp}/atlas.db", var_dir=Path(tmp), knowledge_dir=REPO_DATA,
                            warm_citations=False)

        with TestClient(create_app(settings(tmp_small))) as small, \
                TestClient(create_app(settings(tmp_large))) as large:
            exports = export_figures(small, repeat)
            t = time.perf_counter()
            add_references(large, extra)
            insert_s = time.perf_counter() - t
            t = time.perf_counter()
            large.get("/techniques/cbam/citation")  # the first request of the new version builds the key map
            first_ms = (time.perf_counter() - t) * 1000
            figures = citation_figures(small, large, repeat)

    n = 52 + extra
    print(f"\nCitation and note latency, median ms, 52 vs {n:,} stored references, measured alternately "
          f"({extra:,} inserted in {insert_s:.1f} s; the first request after the insert took {first_ms:.0f} ms: "
          "it builds the export-key map of the new catalogue version)")
    print(f"{'request (median, then min)':<22}{'uncached 52':>13}{'uncached ' + f'{n:,}':>17}{'ratio':>8}"
          f"{'cached 52':>11}{'cached ' + f'{n:,}':>15}{'ratio':>8}")
    for label, (u1, u2, c1, c2) in sorted(figures.items(), key=lambda kv: kv[0].startswith("min ")):
        print(f"{label:<22}{u1:>13.2f}{u2:>17.2f}{u2 / u1:>8.2f}{c1:>11.2f}{c2:>15.2f}{c2 / c1:>8.2f}")

    print("\nWhole-library exports (52 references), median ms: cold (nothing cached), warm, and a new filter "
          "set (category=soft) once the library's entries are cached")
    print(f"{'export':<22}{'cold':>10}{'warm':>10}{'new set':>10}")
    for label, (cold, warm, new) in exports.items():
        print(f"{label:<22}{cold:>10.1f}{warm:>10.2f}{new:>10.2f}" if new is not None else
              f"{label:<22}{cold:>10.1f}{warm:>10.2f}{'':>10}")

    print("\nLaTeX decoding of one imported value")
    rows = decoding_figures(args.quick)
    for label, size, seconds in rows:
        print(f"{label:<22}{size / 1e6:>8.2f} MB{seconds:>9.3f} s{size / seconds / 1e6:>9.2f} MB/s")


if __name__ == "__main__":
    main()
