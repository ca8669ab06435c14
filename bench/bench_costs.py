"""The cost sweep as a script: measure every mechanism's cost curves and write data/costs/<profile>.json,
then print a table of the fitted growth exponents against the stated complexities.

    .venv/bin/python bench/bench_costs.py                          # the CPU profile (about 15 min on 2 cores)
    .venv/bin/python bench/bench_costs.py --only non-local --only cbam -o -   # two techniques, to stdout
    .venv/bin/python bench/bench_costs.py --device cuda --profile cuda-h100  # on a GPU

Arguments are those of ``attention-atlas bench costs``; see ``--help``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.cli import build_parser  # noqa: E402
from service.settings import Settings  # noqa: E402


def table(profile: dict) -> str:
    rows = [f"{'technique':36} {'axis':9} {'time':>6} {'stated':>6} {'memory':>6} {'stated':>6}  verdicts"]
    for slug, t in profile["techniques"].items():
        for c in t["curves"]:
            ft, fm = c["fits"]["time"], c["fits"]["memory"]

            def num(v):
                return f"{v:6.2f}" if v is not None else "     -"

            rows.append(f"{slug:36} {c['axis']:9} {num(ft['exponent'])} {num(ft['stated_exponent'])} "
                        f"{num(fm['exponent'])} {num(fm['stated_exponent'])}  {ft['verdict']}, {fm['verdict']}")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(["bench", "costs", *argv])
    settings = Settings()
    code = args.func(args, settings)
    if code == 0 and args.output != "-":
        root = Path(args.data or settings.knowledge_dir)
        target = Path(args.output) if args.output else root / "costs" / f"{args.profile or args.device.split(':')[0]}.json"
        profile = json.loads(target.read_text(encoding="utf-8"))
        print(table(profile))
        cond = profile["conditions"]
        print(f"\nwall {cond.get('wall_s')} s; load average before {cond.get('loadavg_before')}, "
              f"after {cond.get('loadavg_after')}")
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
