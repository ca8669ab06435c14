#!/usr/bin/env bash
# Sets up .venv (only when pyproject.toml or the set-up changed), installs the page assets from npm (only
# when web/package-lock.json changed), and serves the API with an embedded SQLite database holding the
# catalogue. Arguments go to `attention-atlas serve` (e.g. --port 8080; or set ATLAS_PORT).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if command -v npm >/dev/null; then
  bash scripts/build-assets.sh --if-changed || echo "assets: not installed; formulas show as LaTeX source"
fi
host=${ATLAS_HOST:-127.0.0.1} port=${ATLAS_PORT:-8000} prev=
for arg in "$@"; do
  case "$prev" in --host) host=$arg ;; --port) port=$arg ;; esac
  case "$arg" in --host=*) host=${arg#--host=} ;; --port=*) port=${arg#--port=} ;; esac
  prev=$arg
done
echo "serve: http://$host:$port (another port: bash scripts/serve.sh --port 8080, or ATLAS_PORT=8080)"
exec .venv/bin/attention-atlas serve "$@"
