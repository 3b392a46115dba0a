#!/usr/bin/env bash
# End-to-end test of the CPU docker-compose deployment on one machine, with no image registry:
#   engine (starts dockerd when none runs) -> base image (pulls it, or debootstraps a local one, cached)
#   -> build -> `run worker miner demo` -> `up -d api` -> healthy -> POST /search/speech-to-text with a demo
#   clip, its translation in the top 5 -> GET /indexes, /metrics -> down.
# Prints each step's time; exits non-zero with the reason when a step fails. Traffic goes to 127.0.0.1 only
# (the API's port is published on loopback); the build uses the host's network to reach its package mirrors.
#
# Settings (environment): COMPOSE (default docker-compose, or "docker compose"), MINER_BASE_IMAGE,
# MINER_TORCH_VERSION, MINER_PIP_INDEX_URL, SMOKE_WORK (scratch folder, default /tmp/samu-smoke),
# SMOKE_NICE (niceness of what it starts, default 10), SMOKE_HEALTH_TIMEOUT (s, default 900).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
read -r -a COMPOSE_CMD <<<"${COMPOSE:-docker-compose}"
PROJECT=samu-smoke
WORK=${SMOKE_WORK:-/tmp/samu-smoke}
NICE=(nice -n "${SMOKE_NICE:-10}")
# a French demo clip and the English sentence it says (miner/demo_assets/clips.tsv)
CLIP=${SMOKE_CLIP:-miner/demo_assets/clips/m000856624b6b_fr.flac}
EXPECT=${SMOKE_EXPECT:-You have withdrawn your registration}

STARTED_DOCKERD=""
UP=""
TIMES=()
T_ALL=$(date +%s.%N)

say() { printf '[smoke] %s\n' "$*"; }
fail() {
  printf '[smoke] FAILED: %s\n' "$*" >&2
  exit 1
}
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
step() { # step NAME COMMAND...: run it, record and print its time
  local name=$1 t
  shift
  say "--- $name"
  t=$(date +%s.%N)
  "$@" || fail "step '$name' failed (see above)"
  TIMES+=("$(printf '%-26s %7s s' "$name" "$(elapsed "$t")")")
  say "$name: $(elapsed "$t") s"
}
compose() { "${COMPOSE_CMD[@]}" -p "$PROJECT" --env-file "$WORK/smoke.env" -f docker-compose.yml "$@"; }

cleanup() {
  local rc=$?
  if [[ -n $UP ]]; then
    [[ $rc -ne 0 ]] && compose logs --tail 50 api >&2 || true
    compose --profile batch down --remove-orphans >/dev/null 2>&1 || say "warning: '${COMPOSE_CMD[*]} down' failed"
  fi
  if [[ -n $STARTED_DOCKERD ]]; then # stop only the daemon this script started
    kill "$STARTED_DOCKERD" 2>/dev/null && wait "$STARTED_DOCKERD" 2>/dev/null || true
    say "stopped the dockerd this script started (pid $STARTED_DOCKERD)"
  fi
  if [[ ${#TIMES[@]} -gt 0 ]]; then
    say "step times:"
    printf '[smoke]   %s\n' "${TIMES[@]}"
  fi
  say "total $(elapsed "$T_ALL") s: $([[ $rc -eq 0 ]] && echo passed || echo "FAILED (exit $rc)")"
}
trap cleanup EXIT

# --------------------------------------------------------------------------------------------------- engine
engine() {
  command -v docker >/dev/null || fail "no docker CLI: apt-get install -y docker.io"
  command -v "${COMPOSE_CMD[0]}" >/dev/null || fail "no ${COMPOSE_CMD[0]}: apt-get install -y docker-compose (or set COMPOSE='docker compose')"
  if docker info >/dev/null 2>&1; then
    say "using the running Docker engine ($(docker info -f '{{.ServerVersion}}'))"
    return 0
  fi
  command -v dockerd >/dev/null || fail "no Docker engine runs and there is no dockerd: apt-get install -y docker.io"
  [[ $(id -u) -eq 0 ]] || fail "no Docker engine runs and only root can start dockerd: start it (sudo dockerd &) or run this as root"
  say "no Docker engine runs: starting dockerd (log: $WORK/dockerd.log)"
  # niced: builds and containers run as its children and must not starve other work on the machine
  "${NICE[@]}" dockerd >"$WORK/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$STARTED_DOCKERD" 2>/dev/null || {
      STARTED_DOCKERD=""
      tail -n 20 "$WORK/dockerd.log" >&2
      fail "dockerd exited at start (log above, full log $WORK/dockerd.log): the Docker engine cannot run here"
    }
    sleep 1
  done
  tail -n 20 "$WORK/dockerd.log" >&2
  fail "dockerd did not answer within 60 s (log above): the Docker engine cannot run here"
}

# ----------------------------------------------------------------------------------------------- base image
# The configured base when it is here or can be pulled; else a minbase debootstrap of this machine's release,
# imported as samu-miner-base:<release>-minbase and kept (later runs reuse it).
base_image() {
  local base=${MINER_BASE_IMAGE:-debian:bookworm-slim} id codename mirror local_tag rootfs
  if docker image inspect "$base" >/dev/null 2>&1 || timeout 120 docker pull -q "$base" >/dev/null 2>&1; then
    say "base image $base"
    echo "MINER_BASE_IMAGE=$base" >>"$WORK/smoke.env"
    return 0
  fi
  # shellcheck disable=SC1091
  id=$(. /etc/os-release && echo "${ID:-}") codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [[ ($id == debian || $id == ubuntu) && -n $codename ]] \
    || fail "$base cannot be pulled, and this machine ($id $codename) is not Debian/Ubuntu to debootstrap a base: set MINER_BASE_IMAGE to a local image"
  local_tag=samu-miner-base:$codename-minbase
  if docker image inspect "$local_tag" >/dev/null 2>&1; then
    say "$base cannot be pulled: using the cached local base $local_tag"
  else
    command -v debootstrap >/dev/null || fail "$base cannot be pulled and debootstrap is missing: apt-get install -y debootstrap"
    # the host's own mirror (the build reaches the same one)
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null \
      | awk -v c="$codename" '$2 == c { print $1; exit }')
    mirror=${mirror:-http://deb.debian.org/debian/}
    rootfs=$WORK/rootfs
    rm -rf "$rootfs"
    say "$base cannot be pulled: debootstrap --variant=minbase $codename from $mirror -> $local_tag"
    "${NICE[@]}" debootstrap --variant=minbase "$codename" "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap failed (log above)"; }
    # the host's apt sources (same release: updates and security too)
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null || [[ -s /etc/apt/sources.list ]]; then
      rm -f "$rootfs/etc/apt/sources.list"
      cp -a /etc/apt/sources.list.d/. "$rootfs/etc/apt/sources.list.d/"
      [[ -s /etc/apt/sources.list ]] && cp /etc/apt/sources.list "$rootfs/etc/apt/"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$local_tag" >/dev/null
    rm -rf "$rootfs"
  fi
  echo "MINER_BASE_IMAGE=$local_tag" >>"$WORK/smoke.env"
}

# ------------------------------------------------------------------------------------- what the build needs
# The host's pip setup, carried into the build: its extra CA certificates (a TLS-intercepting proxy), its
# index when that is http(s), and a local torch wheel (then torch needs no PyTorch index).
host_pip_setup() {
  local torch=${MINER_TORCH_VERSION:-2.13.0} pip=(python3 -m pip) dirs dir whl index
  [[ -x .venv/bin/pip ]] && pip=(.venv/bin/pip)
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt deploy/certs/
    say "extra CA certificates for the build: $(cd deploy/certs && ls -- *.crt | tr '\n' ' ')"
  fi
  index=${PIP_INDEX_URL:-$("${pip[@]}" config get global.index-url 2>/dev/null || true)}
  [[ $index == http* ]] && echo "MINER_PIP_INDEX_URL=$index" >>"$WORK/smoke.env"
  dirs="${PIP_FIND_LINKS:-} $("${pip[@]}" config get global.find-links 2>/dev/null || true)"
  for dir in $dirs; do
    for whl in "${dir#file://}"/torch-"$torch"[+-]*.whl; do
      [[ -f $whl ]] || continue
      [[ -f deploy/wheels/$(basename "$whl") ]] || cp "$whl" deploy/wheels/
      echo "MINER_TORCH_INDEX_URL=" >>"$WORK/smoke.env"
      say "torch from the local wheel deploy/wheels/$(basename "$whl")"
      return 0
    done
  done
  say "no local torch $torch wheel: torch comes from the PyTorch index"
}

# -------------------------------------------------------------------------------------------------- checks
run_demo() {
  compose --profile batch run --rm worker miner demo | tee "$WORK/demo.log" || fail "miner demo failed"
  grep -Eq '^[0-9]+ pairs mined from [0-9]+ clips' "$WORK/demo.log" || fail "miner demo printed no summary line"
}

wait_healthy() {
  local cid status deadline=$((SECONDS + ${SMOKE_HEALTH_TIMEOUT:-900}))
  cid=$(compose ps -q api)
  [[ -n $cid ]] || fail "the api container was not created"
  while :; do
    status=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$cid")
    case $status in
      "running healthy") break ;;
      *unhealthy | exited* | dead*) fail "the api container is '$status' (logs below)" ;;
    esac
    ((SECONDS < deadline)) || fail "the api container is still '$status' after ${SMOKE_HEALTH_TIMEOUT:-900} s"
    sleep 2
  done
  curl -fsS "$URL/readyz" || fail "healthy, but GET /readyz failed"
  echo
}

search() {
  curl -fsS -o "$WORK/search.json" -w '[smoke] HTTP %{http_code} in %{time_total} s\n' \
    -F "audio=@$CLIP" -F text_db=demo-en -F k=5 "$URL/search/speech-to-text" \
    || fail "POST /search/speech-to-text failed"
  python3 - "$WORK/search.json" "$EXPECT" <<'EOF' || fail "the search answer is wrong (above)"
import json, sys
answer = json.load(open(sys.argv[1]))
texts = [hit["text"] for hit in answer["results"][:5]]
for rank, hit in enumerate(answer["results"][:5], 1):
    print(f"  {rank}. cosine {hit['cosine']:.3f}  {hit['text']}")
print(f"  took_ms {answer['took_ms']}")
if sys.argv[2] not in texts:
    sys.exit(f"the clip's translation {sys.argv[2]!r} is not in the top 5")
EOF
}

indexes_and_metrics() {
  curl -fsS "$URL/indexes" | tee "$WORK/indexes.json" || fail "GET /indexes failed"
  echo
  python3 -c 'import json, sys; dbs = {d["name"]: d for d in json.load(open(sys.argv[1]))}
sys.exit(None if dbs.get("demo-en", {}).get("size", 0) > 0 else f"demo-en is not served: {sorted(dbs)}")' \
    "$WORK/indexes.json" || fail "GET /indexes does not list the demo database"
  curl -fsS "$URL/metrics" >"$WORK/metrics.txt" || fail "GET /metrics failed"
  grep -F '/search/speech-to-text' "$WORK/metrics.txt" | head -n 3 || true
  grep -qF '/search/speech-to-text' "$WORK/metrics.txt" || fail "/metrics does not count the search request"
}

build_image() {
  say "build log: $WORK/build.log"
  "${NICE[@]}" "${COMPOSE_CMD[@]}" -p "$PROJECT" --env-file "$WORK/smoke.env" -f docker-compose.yml build api \
    >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; fail "the image did not build (log above)"; }
  grep -E '^faiss .* torch ' "$WORK/build.log" || true
}

up_api() {
  UP=1
  compose up -d api
}

# ------------------------------------------------------------------------------------------------------ run
mkdir -p "$WORK"
# a fresh data root each run (the demo database is built again); uid 1000 is the image's user
rm -rf "$WORK/data" "$WORK/models"
mkdir -p "$WORK/data" "$WORK/models"
chown 1000:1000 "$WORK/data" "$WORK/models" 2>/dev/null || chmod 777 "$WORK/data" "$WORK/models"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
# the compose variables of this run; --env-file keeps a developer's .env out of it
cat >"$WORK/smoke.env" <<EOF
MINER_DATA_DIR=$WORK/data
MINER_MODEL_DIR=$WORK/models
MINER_PORT=$PORT
MINER_BIND=127.0.0.1
MINER_HEALTH_INTERVAL=5s
EOF

step "engine" engine
step "base image" base_image
step "build setup" host_pip_setup
step "build" build_image
IMAGE=${MINER_IMAGE:-samu-miner:latest}
say "image $IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.2f GB", $1 / 1e9 }')"
step "run worker miner demo" run_demo
step "up -d api" up_api
step "healthy (/readyz)" wait_healthy
step "search speech-to-text" search
step "indexes and metrics" indexes_and_metrics
step "down" compose --profile batch down --remove-orphans
UP=""
cd "$ROOT"
