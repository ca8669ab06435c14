"""Fuzz the service with Schemathesis: every operation of the OpenAPI document, positive and negative
data, every check, a fixed seed. The service runs on a loopback port with a fresh SQLite database and a
write key (so the write routes are fuzzed past authentication); it is stopped afterwards.

    python -m tests.fuzz.run                          # the bounded run the test suite makes
    python -m tests.fuzz.run --max-examples 1000      # a long local run (about 20,000 cases)
    python -m tests.fuzz.run --max-time 900           # fuzz for 15 minutes

Exits non-zero when Schemathesis reports a failure (a 5xx, a response that breaks the document, a
schema-valid request refused, ...) or when the service logged an unhandled error.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.live import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parents[2]
KEY = "atlas_fuzz-write-key-0123456789abcdef"
SEED = 20260411
CI_MAX_EXAMPLES = 25


@dataclass
class Outcome:
    returncode: int
    cases: int | None
    failures: int | None
    report: str
    server_errors: list[str]

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.server_errors


@contextmanager
def serve(tmp: str) -> Iterator[tuple[str, dict[str, str], Path]]:
    """The service on a free loopback port with a fresh SQLite database in ``tmp`` and the write key
    :data:`KEY`; yields (base URL, its environment, its log file) and stops it afterwards."""
    from service.auth import hash_key

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ATLAS_VAR_DIR": tmp, "ATLAS_DATABASE_URL": f"sqlite:///{tmp}/atlas.db",
           "ATLAS_API_KEYS": f"fuzz:write:{hash_key(KEY)}", "PYTHONPATH": str(ROOT),
           "ATLAS_RUN_PRESTART": "true"}  # as `attention-atlas serve` does: workers start with the app
    log_path = Path(tmp) / "service.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            wait_ready(base, server)
            yield base, env, log_path
        finally:
            stop(server)


def fuzz(max_examples: int = CI_MAX_EXAMPLES, seed: int = SEED, max_time: int | None = None, workers: int = 1,
         extra: list[str] | None = None, echo: bool = False) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="atlas-fuzz-") as tmp:
        with serve(tmp) as (base, env, log_path):
            cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/openapi.json",
                   "--checks", "all", "--mode", "all", "--seed", str(seed), "--workers", str(workers),
                   "--max-examples", str(max_examples), "--header", f"Authorization: Bearer {KEY}",
                   "--request-timeout", "120", "--no-color", *(["--max-time", str(max_time)] if max_time else []),
                   *(extra or [])]
            # run from the scratch folder: Schemathesis keeps a case cache in its working directory, which
            # would replay earlier failures first and make a run depend on the ones before it
            st_env = {**env, "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks"}
            if echo:
                proc = subprocess.run(cmd, cwd=tmp, env=st_env, text=True, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT)
                print(proc.stdout)
            else:
                proc = subprocess.run(cmd, cwd=tmp, env=st_env, text=True, capture_output=True)
        service_log = log_path.read_text(errors="replace")
    report = (proc.stdout or "") + (proc.stderr or "")
    found = re.search(r"(\d+) generated(?:, (\d+) found (\d+) unique failures?)?", report)
    cases = int(found.group(1)) if found else None
    failures = int(found.group(3)) if found and found.group(3) else (0 if found else None)
    unhandled = [line for line in service_log.splitlines() if "unhandled error" in line or "Traceback" in line]
    return Outcome(proc.returncode, cases, failures, report, unhandled)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("ATLAS_FUZZ_EXAMPLES",
                                                                               CI_MAX_EXAMPLES)),
                        help="cases per operation and phase (default %(default)s; env ATLAS_FUZZ_EXAMPLES)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--max-time", type=int, default=None, help="seconds; fuzzing repeats until they are spent")
    parser.add_argument("--workers", type=int, default=1)
    args, extra = parser.parse_known_args(argv)
    outcome = fuzz(args.max_examples, args.seed, args.max_time, args.workers, extra, echo=True)
    print(f"cases: {outcome.cases}, failures: {outcome.failures}, unhandled errors in the service log: "
          f"{len(outcome.server_errors)}")
    for line in outcome.server_errors[:20]:
        print("  " + line)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
