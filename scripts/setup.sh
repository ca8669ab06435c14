#!/usr/bin/env bash
# Creates .venv with the service (and, with --test, what the tests need). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch is pinned to the CPU build; an unpinned torch would pull a multi-GB CUDA build.
TORCH=${ATLAS_TORCH_SPEC:-torch==2.13.0}
if [ "${1:-}" = "--test" ]; then
  .venv/bin/pip install -q "$TORCH" -e '.[test]'
  # timm is a test-only reference for conformance checks; its torchvision requirement has no wheel that
  # matches the CPU torch, and the attention layers compared against do not use it.
  .venv/bin/pip install -q --no-deps 'timm>=1.0'
  .venv/bin/pip install -q pillow huggingface_hub
else
  .venv/bin/pip install -q "$TORCH" -e .
fi
