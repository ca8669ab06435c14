#!/usr/bin/env bash
# Sets up .venv with the test dependencies and runs the whole test suite: against SQLite always, and
# against a throw-away PostgreSQL server too when its binaries are here (ATLAS_TEST_POSTGRES=off skips
# it, =require installs it if missing, or point ATLAS_TEST_POSTGRES_URL at a server of your own).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
PYTEST=(.venv/bin/python -m pytest -q "$@")
mode=${ATLAS_TEST_POSTGRES:-auto}
have_pg() { command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
if [ -z "${ATLAS_TEST_POSTGRES_URL:-}" ] && { [ "$mode" = require ] || { [ "$mode" = auto ] && have_pg; }; }; then
  exec bash scripts/with-postgres.sh "${PYTEST[@]}"
fi
[ -n "${ATLAS_TEST_POSTGRES_URL:-}" ] || echo "PostgreSQL binaries not found: testing against SQLite only"
exec "${PYTEST[@]}"
