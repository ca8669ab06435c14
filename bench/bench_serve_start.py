"""Time from `bash scripts/serve.sh` to the first 200 of /healthz on a clean clone: the first start (set-up
included) and the second (nothing changed), against starting `.venv/bin/attention-atlas serve` directly
in the same clone (the baseline: the service's own start, no script). Besides wall time it prints the
CPU seconds the started process and the children it waited for used, which a busy machine inflates less.

    python bench/bench_serve_start.py [--repo .] [--keep DIR]

With --keep DIR the clone stays in DIR/clone; run again with the same DIR to time later starts only.

It clones the repository's committed HEAD into a temporary folder, so the first start really installs
.venv (from whatever package index pip is configured with). Servers listen on a free loopback port and
are stopped after each start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from _support import free_port


def _cpu_s(pid: int) -> float:
    """utime + stime + cutime + cstime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def time_to_health(cmd: list[str], cwd: Path, log: Path, limit_s: float = 900) -> tuple[float, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_") and k != "DATABASE_URL"}
    env["ATLAS_PORT"] = str(port)
    start = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while time.perf_counter() - start < limit_s:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {proc.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - start, _cpu_s(proc.pid)
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no /healthz within {limit_s} s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--keep", help="clone into this folder and keep it")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="atlas-serve-"))
    clone = work / "clone"
    fresh = not clone.exists()
    if fresh:
        subprocess.run(["git", "clone", "--quiet", args.repo, str(clone)], check=True)
    log = work / "serve.log"
    try:
        print(f"{'':32}{'wall s':>8}{'cpu s':>8}")
        if fresh:
            wall, cpu = time_to_health(["bash", "scripts/serve.sh"], clone, log)
            print(f"{'first start (set-up included)':32}{wall:8.1f}{cpu:8.1f}")
        second = time_to_health(["bash", "scripts/serve.sh"], clone, log)
        direct = time_to_health([str(clone / ".venv/bin/attention-atlas"), "serve"], clone, log)
        print(f"{'later start (serve.sh)':32}{second[0]:8.1f}{second[1]:8.1f}")
        print(f"{'attention-atlas serve alone':32}{direct[0]:8.1f}{direct[1]:8.1f}")
        print(f"{'serve.sh / serve alone':32}{second[0] / direct[0]:8.2f}{second[1] / direct[1]:8.2f}")
        if args.keep:
            print(f"log: {log}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
