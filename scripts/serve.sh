#!/usr/bin/env bash
# Sets up .venv and serves the API on 127.0.0.1:8000 with an embedded SQLite database holding the catalogue.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -x scripts/build-assets.sh ] && command -v npm >/dev/null && bash scripts/build-assets.sh || true
exec .venv/bin/attention-atlas serve "$@"
