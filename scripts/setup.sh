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
  # Public implementations used as test oracles (tests/mechanisms/test_peer_oracles.py), pinned and without their
  # dependencies, so none of them can pull another torch; only the small pure-Python modules they import are added.
  .venv/bin/pip install -q --no-deps 'einops==0.8.2' 'axial-positional-embedding==0.3.12' \
    'perceiver-pytorch==0.11.0' 'axial-attention==0.6.1' 'slot-attention==1.5.2' 'resnest==0.0.5' \
    'vit-pytorch==1.26.14' 'performer-pytorch==1.1.4' 'fightingcv-attention==1.0.0' \
    'self-attention-cv==1.2.3'
else
  .venv/bin/pip install -q "$TORCH" -e .
fi
