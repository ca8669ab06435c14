#!/usr/bin/env bash
# Creates .venv with the service (and, with --test, what the tests need). Idempotent: when pyproject.toml,
# this script and the torch pin are unchanged since the last successful run, it does nothing (a stamp in
# .venv records them). ATLAS_SETUP_FORCE=1 reinstalls anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
# torch is pinned to the CPU build; an unpinned torch would pull a multi-GB CUDA build.
TORCH=${ATLAS_TORCH_SPEC:-torch==2.13.0}
mode=serve
[ "${1:-}" = "--test" ] && mode=test
digest() { { cat pyproject.toml scripts/setup.sh; echo "$TORCH"; } | sha256sum | cut -d' ' -f1; }
want=$(digest)
stamp() { cat ".venv/.setup-$1" 2>/dev/null || true; }
if [ -z "${ATLAS_SETUP_FORCE:-}" ] && [ -x .venv/bin/attention-atlas ] \
   && { [ "$(stamp "$mode")" = "$want" ] || { [ "$mode" = serve ] && [ "$(stamp test)" = "$want" ]; }; }; then
  exit 0
fi
start=$SECONDS
step() { echo "setup: $*"; }
if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
step "upgrading pip"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$mode" = test ]; then
  step "installing $TORCH (CPU), the service and the test tools into .venv (a few minutes the first time)"
  .venv/bin/pip install -q "$TORCH" -e '.[test]'
  # timm is a test-only reference for conformance checks; its torchvision requirement has no wheel that
  # matches the CPU torch, and the attention layers compared against do not use it.
  step "installing timm (without dependencies) and its test helpers"
  .venv/bin/pip install -q --no-deps 'timm>=1.0'
  .venv/bin/pip install -q pillow huggingface_hub
  # Public implementations used as test oracles (tests/mechanisms/test_peer_oracles.py), pinned and without their
  # dependencies, so none of them can pull another torch; only the small pure-Python modules they import are added.
  .venv/bin/pip install -q --no-deps 'einops==0.8.2' 'axial-positional-embedding==0.3.12' \
    'perceiver-pytorch==0.11.0' 'axial-attention==0.6.1' 'slot-attention==1.5.2' 'resnest==0.0.5' \
    'vit-pytorch==1.26.14' 'performer-pytorch==1.1.4' 'fightingcv-attention==1.0.0' \
    'self-attention-cv==1.2.3'
  # OpenMMLab's NonLocal2d (mmcv.cnn) and DANet modules (mmsegmentation): the operator-free mmcv-lite (mmseg
  # 1.2.2 refuses mmcv 2.2), and the pure-Python modules that mmcv and mmengine import on that path
  .venv/bin/pip install -q --no-deps 'mmcv-lite==2.1.0' 'mmengine==0.10.7' 'mmsegmentation==1.2.2' \
    'opencv-python-headless==5.0.0.93' 'addict==2.4.0' 'yapf==0.43.0' 'termcolor==3.3.0' 'platformdirs>=3.5.1'
else
  step "installing $TORCH (CPU) and the service into .venv (a few minutes the first time)"
  .venv/bin/pip install -q "$TORCH" -e .
fi
echo "$want" > ".venv/.setup-$mode"
step "done in $((SECONDS - start)) s; the command is .venv/bin/attention-atlas (or: source .venv/bin/activate)"
