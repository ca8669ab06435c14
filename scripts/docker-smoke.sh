#!/usr/bin/env bash
# Builds the Docker image and exercises it end to end on this host, with no container registry:
#   1. installs docker.io and debootstrap from Debian when they are missing;
#   2. uses a running Docker engine, or starts a private dockerd with no bridge network
#      (--bridge=none --iptables=false): every container here uses --network host;
#   3. when the base image (python:3.11-slim) is absent, builds one from Debian bookworm (Python 3.11)
#      with debootstrap and tags it python:3.11-slim, so the Dockerfile's default resolves;
#   4. builds the image (docker build --network host) with the CPU torch wheel from local disk;
#   5. runs it on 127.0.0.1 and a free port with the SQLite database on a volume, waits for /healthz and
#      the container's HEALTHCHECK, and checks: unprivileged user, no compilers, readiness, a search, a
#      BibTeX export, a run call, a graceful stop, the database surviving a restart;
#   6. runs the same checks with DATABASE_URL pointing at a throw-away PostgreSQL on the host's loopback
#      (scripts/with-postgres.sh; skipped where PostgreSQL is not installed);
#   7. checks the image size;
#   8. removes what it started (containers, volume, image unless --keep-image, its dockerd).
#
# Usage: scripts/docker-smoke.sh [--keep-image] [--purge] [--no-postgres]
#   --keep-image   keep the built image (and with it the build cache)
#   --purge        also remove the debootstrap base image and the private engine's data folder
#   --no-postgres  skip step 6
# Environment: ATLAS_SMOKE_IMAGE (tag, default attention-atlas:smoke), ATLAS_SMOKE_MAX_IMAGE_MB (size
# limit, default 2500), ATLAS_WHEEL_DIR (where the torch wheel is, default /opt/wheels), TORCH_VERSION
# (default 2.13.0), ATLAS_SMOKE_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

IMAGE=${ATLAS_SMOKE_IMAGE:-attention-atlas:smoke}
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
MAX_IMAGE_MB=${ATLAS_SMOKE_MAX_IMAGE_MB:-2500}
WHEEL_DIR=${ATLAS_WHEEL_DIR:-/opt/wheels}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
MIRROR=${ATLAS_SMOKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=$ROOT/build/docker-smoke
ENGINE_RUN=/run/atlas-smoke-docker
ENGINE_DATA=/var/lib/atlas-smoke-docker
BASE_LABEL=org.attention-atlas.smoke-base

KEEP_IMAGE=0
PURGE=0
WITH_PG=1
for arg in "$@"; do
  case $arg in
    --keep-image) KEEP_IMAGE=1 ;;
    --purge) PURGE=1 ;;
    --no-postgres) WITH_PG=0 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (allowed: --keep-image, --purge, --no-postgres)" >&2; exit 2 ;;
  esac
done

START=$(date +%s)
say() { printf '[%4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
fail() { say "FAIL: $*"; exit 1; }

MAIN_CTR=atlas-smoke-$$
PG_CTR=atlas-smoke-pg-$$
CTR=$MAIN_CTR
VOL=atlas-smoke-data-$$
STARTED_DOCKERD=0
DOCKERD_PID=
CTR_CREATED=0
PG_CREATED=0
VOL_CREATED=0
IMAGE_BUILT=0

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  say "cleaning up"
  local name
  for name in "$MAIN_CTR" "$PG_CTR"; do
    [ "$name" = "$MAIN_CTR" ] && [ "$CTR_CREATED" = 0 ] && continue
    [ "$name" = "$PG_CTR" ] && [ "$PG_CREATED" = 0 ] && continue
    docker container inspect "$name" >/dev/null 2>&1 || continue
    if [ "$rc" != 0 ]; then
      say "log of $name (last 40 lines):"
      docker logs --tail 40 "$name" 2>&1 | sed 's/^/    | /'
    fi
    docker rm -f "$name" >/dev/null && say "removed container $name"
  done
  [ "$VOL_CREATED" = 1 ] && docker volume rm "$VOL" >/dev/null && say "removed volume $VOL"
  if [ "$IMAGE_BUILT" = 1 ] && [ "$KEEP_IMAGE" = 0 ]; then
    docker rmi "$IMAGE" >/dev/null && say "removed image $IMAGE"
    # the builder stage's layers: untagged, and only removed from the private engine
    [ "$STARTED_DOCKERD" = 1 ] && docker image prune -f >/dev/null && say "removed the untagged build layers"
  elif [ "$IMAGE_BUILT" = 1 ]; then
    say "kept image $IMAGE (--keep-image)"
  fi
  if [ "$PURGE" = 1 ] && [ -n "$(docker image inspect -f "{{index .Config.Labels \"$BASE_LABEL\"}}" "$BASE_IMAGE" 2>/dev/null)" ]; then
    docker rmi "$BASE_IMAGE" >/dev/null && say "removed base image $BASE_IMAGE (--purge)"
  fi
  rm -rf "$WORK/rootfs" "$ROOT/build/ca-certificates"
  if [ "$STARTED_DOCKERD" = 1 ]; then
    kill -TERM "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
      say "dockerd $DOCKERD_PID did not stop in 30 s; killing it"
      kill -KILL "$DOCKERD_PID" 2>/dev/null
    fi
    # what dockerd leaves mounted under its folders (the host network namespace's handle)
    awk '{ print $2 }' /proc/mounts | grep -E "^($ENGINE_RUN|$ENGINE_DATA)/" | sort -r | xargs -r -n1 umount
    rm -rf "$ENGINE_RUN"
    say "stopped dockerd (pid $DOCKERD_PID)"
    [ "$PURGE" = 1 ] && rm -rf "$ENGINE_DATA" && say "removed $ENGINE_DATA (--purge)"
  fi
  if [ "$rc" = 0 ]; then say "PASS"; else say "FAIL (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need_root() { [ "$(id -u)" = 0 ] || fail "$1 needs root"; }

mkdir -p "$WORK"

# --- 1. packages -------------------------------------------------------------------------------------
missing=()
command -v docker >/dev/null || missing+=(docker.io)
command -v dockerd >/dev/null || { [[ " ${missing[*]} " == *" docker.io "* ]] || missing+=(docker.io); }
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  need_root "installing ${missing[*]}"
  say "installing from Debian: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >"$WORK/apt.log" 2>&1 \
    || { tail -20 "$WORK/apt.log"; fail "apt-get install failed (log: $WORK/apt.log)"; }
fi
say "$(docker --version | cut -d, -f1) (client); $(dockerd --version | cut -d, -f1) (engine)"

# --- 2. engine -----------------------------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
  say "using the running Docker engine (${DOCKER_HOST:-default socket})"
else
  need_root "starting dockerd"
  mkdir -p "$ENGINE_RUN" "$ENGINE_DATA"
  export DOCKER_HOST=unix://$ENGINE_RUN/docker.sock
  for driver in overlay2 vfs; do
    say "starting dockerd (storage driver $driver, no bridge, no iptables; log: $WORK/dockerd.log)"
    dockerd --bridge=none --iptables=false --ip6tables=false --storage-driver "$driver" \
      --data-root "$ENGINE_DATA" --exec-root "$ENGINE_RUN/exec" --pidfile "$ENGINE_RUN/dockerd.pid" \
      --host "$DOCKER_HOST" >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    STARTED_DOCKERD=1
    for _ in $(seq 60); do
      docker info >/dev/null 2>&1 && break
      kill -0 "$DOCKERD_PID" 2>/dev/null || break
      sleep 0.5
    done
    docker info >/dev/null 2>&1 && break
    say "dockerd did not come up with $driver:"; tail -5 "$WORK/dockerd.log" | sed 's/^/    | /'
    kill -TERM "$DOCKERD_PID" 2>/dev/null; wait "$DOCKERD_PID" 2>/dev/null || true
    STARTED_DOCKERD=0
  done
  [ "$STARTED_DOCKERD" = 1 ] || fail "could not start dockerd (see $WORK/dockerd.log)"
  say "dockerd $(docker version -f '{{.Server.Version}}') up, pid $DOCKERD_PID, storage $(docker info -f '{{.Driver}}')"
fi

# --- 3. base image -------------------------------------------------------------------------------------
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  say "base image $BASE_IMAGE present"
else
  need_root "debootstrap"
  say "base image $BASE_IMAGE absent: building it from Debian bookworm with debootstrap ($MIRROR)"
  rootfs=$WORK/rootfs
  rm -rf "$rootfs"
  debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap failed (log: $WORK/debootstrap.log)"; }
  # what a slim image leaves out: package lists, caches, documentation
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
  tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL $BASE_LABEL=debootstrap-bookworm" \
    --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  say "imported $BASE_IMAGE ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
fi
docker run --rm --network host "$BASE_IMAGE" python3 -c \
  'import sys, ensurepip; assert sys.version_info[:2] == (3, 11), sys.version; print("    base python", sys.version.split()[0])'

# --- 4. build ------------------------------------------------------------------------------------------
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
mkdir -p build/wheels
wheel=$(ls "$WHEEL_DIR"/torch-"$TORCH_VERSION"+cpu-cp311-cp311-*x86_64.whl 2>/dev/null | head -1 || true)
if [ -n "$wheel" ]; then
  cp -u "$wheel" build/wheels/
  build_args+=(--build-arg "TORCH_SPEC=torch==$TORCH_VERSION+cpu" --build-arg "TORCH_INDEX_URL=")
  say "torch wheel from local disk: build/wheels/$(basename "$wheel")"
else
  say "no local torch $TORCH_VERSION+cpu wheel in $WHEEL_DIR: the build asks the PyTorch CPU index"
fi
# pip in the builder stage trusts the host's CA bundle (a TLS-inspecting proxy's certificate may be in it)
ca_bundle=${ATLAS_SMOKE_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
rm -rf build/ca-certificates
if [ -f "$ca_bundle" ]; then
  mkdir -p build/ca-certificates
  cp "$ca_bundle" build/ca-certificates/host-bundle.crt
  say "pip in the build stage trusts $ca_bundle (not copied to the final image)"
fi
if [ ! -f service/web/static/katex/katex.min.js ] && [ -x scripts/build-assets.sh ] && command -v npm >/dev/null; then
  say "bundling KaTeX: scripts/build-assets.sh"
  bash scripts/build-assets.sh >"$WORK/assets.log" 2>&1 || say "scripts/build-assets.sh failed (log: $WORK/assets.log)"
fi
KATEX=0
if [ -f service/web/static/katex/katex.min.js ]; then
  KATEX=1
  say "KaTeX assets present: the pages typeset formulas"
else
  say "KaTeX assets absent: the pages show formulas as LaTeX source"
fi
say "docker build --network host -t $IMAGE (log: $WORK/build.log)"
IMAGE_BUILT=1
if ! docker build --network host "${build_args[@]}" -t "$IMAGE" . >"$WORK/build.log" 2>&1; then
  tail -40 "$WORK/build.log" | sed 's/^/    | /'
  fail "docker build failed"
fi
grep -E '^Step [0-9]+/[0-9]+ : (FROM|RUN|COPY)' "$WORK/build.log" | cut -c1-110 | sed 's/^/    /'
say "built $IMAGE"

# --- 5. run and exercise -------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_container NAME PORT [docker run options...]: the image on the host network, listening on loopback
start_container() {
  local name=$1 port=$2
  shift 2
  docker run -d --name "$name" --network host -e ATLAS_HOST=127.0.0.1 -e ATLAS_PORT="$port" \
    --health-interval 2s --stop-timeout 35 "$@" "$IMAGE" >/dev/null
  CTR=$name BASE=http://127.0.0.1:$port
  say "started container $CTR on $BASE (host network, loopback only)"
}

wait_healthy() {
  local deadline=$(( $(date +%s) + ${1:-240} )) status
  until curl -fsS -o /dev/null "$BASE/healthz" 2>/dev/null; do
    [ "$(docker inspect -f '{{.State.Running}}' "$CTR")" = true ] || fail "the container exited"
    [ "$(date +%s)" -lt "$deadline" ] || fail "no answer on $BASE/healthz"
    sleep 1
  done
  say "GET /healthz -> 200"
  until [ "$(docker inspect -f '{{.State.Health.Status}}' "$CTR")" = healthy ]; do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$CTR")
    [ "$status" != unhealthy ] || fail "HEALTHCHECK reports unhealthy"
    [ "$(date +%s)" -lt "$deadline" ] || fail "HEALTHCHECK still '$status'"
    sleep 1
  done
  say "HEALTHCHECK -> healthy"
}

# http METHOD PATH [JSON-BODY]: prints the status code; the body is in $WORK/body
http() {
  local args=(-sS -o "$WORK/body" -w '%{http_code}' -X "$1")
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
  curl "${args[@]}" "$BASE$2"
}
json() { python3 -c "import json, sys; d = json.load(open('$WORK/body')); $1"; }
show_fail() { cat "$WORK/body"; echo; fail "$1"; }

# stop_gracefully: docker stop (SIGTERM) must end the service with exit code 0
stop_gracefully() {
  local t0 exit_code
  t0=$(date +%s)
  docker stop "$CTR" >/dev/null
  exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$CTR")
  [ "$exit_code" = 0 ] || fail "the service exited with $exit_code on SIGTERM"
  say "docker stop: exit code 0 after $(( $(date +%s) - t0 )) s"
}

# exercise: readiness, a search, a BibTeX export and a run call against $BASE
exercise() {
  local code routes
  code=$(http GET /openapi.json)
  [ "$code" = 200 ] || fail "GET /openapi.json -> $code"
  routes=$(json "print(' '.join(d['paths']))")

  code=$(http GET /readyz)
  if [[ " $routes " == *" /readyz "* ]]; then
    [ "$code" = 200 ] || show_fail "GET /readyz -> $code"
    say "GET /readyz -> 200"
  else
    say "GET /readyz -> $code (route not in this build; not checked)"
  fi

  code=$(http GET '/techniques?q=channel&limit=100')
  [ "$code" = 200 ] || show_fail "GET /techniques?q=channel -> $code"
  json "slugs = [t['slug'] for t in d['items']]; print('    total', d['total'], ':', ', '.join(slugs[:6]), '...' if len(slugs) > 6 else ''); assert 'squeeze-and-excitation' in slugs, 'squeeze-and-excitation not found'"
  say "GET /techniques?q=channel -> 200"

  code=$(http GET '/techniques/squeeze-and-excitation/citation?format=bibtex')
  if [[ " $routes " == *" /techniques/{slug}/citation "* ]]; then
    [ "$code" = 200 ] || show_fail "GET /techniques/squeeze-and-excitation/citation?format=bibtex -> $code"
    grep -q '^@' "$WORK/body" || show_fail "the BibTeX export has no entry"
    head -3 "$WORK/body" | sed 's/^/    /'
    say "GET /techniques/squeeze-and-excitation/citation?format=bibtex -> 200"
  else
    say "GET /techniques/squeeze-and-excitation/citation?format=bibtex -> $code (route not in this build; not checked)"
  fi

  code=$(http POST /techniques/squeeze-and-excitation/run '{"inputs": {"x": {"shape": [1, 4, 2, 2], "data": [0.1, 0.2, 0.3, 0.4, 1, 0, 0, 1, 0.5, 0.5, 0.5, 0.5, -1, 1, 1, -1]}}, "hyperparameters": {"reduction": 2}}')
  [ "$code" = 200 ] || show_fail "POST /techniques/squeeze-and-excitation/run -> $code"
  json "o = d['outputs']['output']; print('    output shape', o['shape'], '| parameters', d['parameter_count'], '| forward', d['time_ms']['forward'], 'ms'); assert o['shape'] == [1, 4, 2, 2]"
  say "POST /techniques/squeeze-and-excitation/run -> 200"
}

say "--- SQLite on a volume"
docker volume create "$VOL" >/dev/null && VOL_CREATED=1
CTR_CREATED=1
start_container "$MAIN_CTR" "$(free_port)" -v "$VOL":/var/lib/attention-atlas
wait_healthy 300

uid=$(docker exec "$CTR" id -u)
[ "$uid" != 0 ] || fail "the service runs as root"
say "runs as uid $uid ($(docker exec "$CTR" id -un))"
tools=$(docker exec "$CTR" sh -c 'for t in gcc cc c++ make ld; do command -v $t; done' || true)
[ -z "$tools" ] || fail "build tools in the final image: $tools"
say "no compilers or make in the final image"

exercise

code=$(http GET /static/katex/katex.min.js)
if [ "$KATEX" = 1 ] && [ "$(http GET /static/atlas.css)" = 200 ]; then
  [ "$code" = 200 ] || fail "GET /static/katex/katex.min.js -> $code, though KaTeX was in the build context"
  say "GET /static/katex/katex.min.js -> 200 (KaTeX bundled)"
else
  say "GET /static/katex/katex.min.js -> $code (no static files or no KaTeX in this build; not checked)"
fi

docker exec "$CTR" attention-atlas db backup /var/lib/attention-atlas/smoke-backup.db | sed 's/^/    /' \
  || fail "attention-atlas db backup failed in the container"
say "attention-atlas db backup (the command line in the image) wrote a copy on the volume"
docker exec "$CTR" ls -l /var/lib/attention-atlas | grep -q 'atlas.db' || fail "no database file on the volume"
say "database on the volume: $(docker exec "$CTR" ls /var/lib/attention-atlas | tr '\n' ' ')"

stop_gracefully
docker start "$CTR" >/dev/null
wait_healthy 240
code=$(http GET /techniques/squeeze-and-excitation)
[ "$code" = 200 ] || fail "GET /techniques/squeeze-and-excitation after restart -> $code"
say "after restart, the catalogue is served from the same volume"
stop_gracefully

# --- 6. the same image against PostgreSQL ---------------------------------------------------------------
# scripts/with-postgres.sh runs a throw-away server on a loopback port (ATLAS_TEST_POSTGRES_URL) around
# a command; the checks run in that command, with this script's functions.
pg_phase() {
  start_container "$PG_CTR" "$(free_port)" -e DATABASE_URL="$ATLAS_TEST_POSTGRES_URL"
  wait_healthy 300
  exercise
  stop_gracefully
}
have_pg=0
if command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then have_pg=1; fi
if [ "$WITH_PG" = 0 ]; then
  say "--- PostgreSQL: skipped (--no-postgres)"
elif [ "$have_pg" = 0 ] || [ ! -f scripts/with-postgres.sh ]; then
  say "--- PostgreSQL: skipped (no initdb on this host or no scripts/with-postgres.sh)"
else
  say "--- PostgreSQL (DATABASE_URL=postgresql+psycopg://..., server on the host's loopback)"
  PG_CREATED=1
  export -f pg_phase start_container wait_healthy http json show_fail stop_gracefully exercise say fail free_port
  export IMAGE WORK START PG_CTR
  bash scripts/with-postgres.sh bash -c 'set -euo pipefail; pg_phase' | sed -u '/^PostgreSQL on /s/^/    /' \
    || fail "the PostgreSQL checks failed"
fi

# --- 7. size -------------------------------------------------------------------------------------------
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
size_mb=$(( size / 1000000 ))
say "image $IMAGE: $size_mb MB ($size bytes); largest layers:"
docker history --no-trunc --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | sort -h -r | head -4 \
  | awk -F'\t' '{ print "    " $1 "\t" ($2 == "" ? "(base image)" : substr($2, 1, 100)) }'
[ "$size_mb" -le "$MAX_IMAGE_MB" ] || fail "the image is $size_mb MB, over the limit of $MAX_IMAGE_MB MB"
