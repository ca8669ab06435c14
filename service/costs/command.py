"""``attention-atlas bench costs``: run the sweep and write data/costs/<profile>.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..settings import Settings


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="measurements that become data").add_subparsers(
        dest="bench_command", required=True)
    c = bench.add_parser("costs", help="measure every mechanism's cost curves and write a machine profile")
    c.add_argument("--profile", help="profile name, the file data/costs/<profile>.json (default: the device)")
    c.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    c.add_argument("--only", action="append", metavar="SLUG", help="these techniques only (repeatable); "
                   "their entries replace those in an existing profile of the same name")
    c.add_argument("--axis", action="append", choices=("positions", "channels", "batch"))
    c.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: steadier timings)")
    c.add_argument("--latency-ceiling", type=float, default=1.0, help="seconds per forward, CPU time on CPU "
                   "(default 1)")
    c.add_argument("--memory-ceiling", type=float, default=1024, help="MiB of peak memory per forward "
                   "(default 1024)")
    c.add_argument("--curve-budget", type=float, default=15.0, help="seconds per curve, CPU time on CPU "
                   "(default 15)")
    c.add_argument("--data", help="knowledge folder (default: the settings' knowledge_dir)")
    c.add_argument("--output", "-o", help="write here instead of data/costs/<profile>.json ('-': stdout)")
    c.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import torch
    import yaml

    from . import profile as prof
    from .plan import load_plan
    from .sweep import Ceilings, run_sweep

    root = Path(args.data or settings.knowledge_dir)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        print(f"unknown device {args.device!r}; use cpu or cuda[:N]", file=sys.stderr)
        return 2
    if args.profile and not prof.PROFILE_NAME.match(args.profile):
        print(f"profile name {args.profile!r}: use lowercase letters, digits and hyphens", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available on this machine", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads))
    plan = load_plan(root)
    complexities = {p.stem: (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("complexity", {})
                    for p in sorted((root / "techniques").glob("*.yaml"))}
    name = args.profile or device.type
    ceilings = Ceilings(latency_s=args.latency_ceiling, peak_bytes=int(args.memory_ceiling * (1 << 20)),
                        curve_s=args.curve_budget)
    try:
        result = run_sweep(plan, complexities, profile=name, device=device, ceilings=ceilings,
                           slugs=args.only, axes=args.axis)
    except (ValueError, RuntimeError) as exc:
        print(f"sweep refused: {exc}", file=sys.stderr)
        return 2
    target = Path(args.output) if args.output and args.output != "-" else prof.costs_dir(root) / f"{name}.json"
    if args.only and target.is_file():  # a partial re-run replaces only its own entries
        old = json.loads(target.read_text(encoding="utf-8"))
        if old.get("machine") != result["machine"]:
            print("note: the existing profile was measured on a different machine or torch; "
                  "mixing entries from both", file=sys.stderr)
        old["techniques"].update(result["techniques"])
        old["techniques"] = dict(sorted(old["techniques"].items()))
        old.setdefault("partial_runs", []).append({"techniques": sorted(result["techniques"]),
                                                   "conditions": result["conditions"]})
        result = old
    text = prof.dumps(result)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        print(f"wrote {target} ({len(result['techniques'])} techniques, "
              f"{result['conditions'].get('wall_s')} s)", file=sys.stderr)
    return 0
