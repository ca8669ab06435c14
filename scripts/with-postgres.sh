#!/usr/bin/env bash
# Runs a command with a throw-away PostgreSQL server on a loopback port, exported to it as
# ATLAS_TEST_POSTGRES_URL; the server and its files are removed when the command ends.
# Uses initdb/pg_ctl from the PATH (installs Debian's postgresql when they are missing).
set -euo pipefail
if ! command -v initdb >/dev/null || ! command -v pg_ctl >/dev/null; then
  if [ -d /usr/lib/postgresql ]; then
    PATH="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1):$PATH"
  fi
fi
if ! command -v initdb >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  PATH="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1):$PATH"
fi
PGPORT=${ATLAS_PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
PGDIR=$(mktemp -d /tmp/atlas-pg.XXXXXX)
RUNAS=()
if [ "$(id -u)" = 0 ]; then            # PostgreSQL refuses to run as root
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$PGDIR"
  RUNAS=(runuser -u postgres --)
fi
cleanup() {
  "${RUNAS[@]}" pg_ctl -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
}
trap cleanup EXIT
"${RUNAS[@]}" initdb -D "$PGDIR/data" -U atlas --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null 2>&1 \
  || "${RUNAS[@]}" initdb -D "$PGDIR/data" -U atlas --auth=trust -E UTF8 >/dev/null
"${RUNAS[@]}" pg_ctl -D "$PGDIR/data" -l "$PGDIR/server.log" -w \
  -o "-h 127.0.0.1 -p $PGPORT -k $PGDIR -c fsync=off -c full_page_writes=off -c max_connections=200" start >/dev/null
export ATLAS_TEST_POSTGRES_URL="postgresql+psycopg://atlas@127.0.0.1:$PGPORT/postgres"
echo "PostgreSQL on 127.0.0.1:$PGPORT for this run"
"$@"
