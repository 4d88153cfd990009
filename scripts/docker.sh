#!/usr/bin/env bash
# The docker ring of `make run-db-docker` / `make testcase-docker` / `make stop-docker`:
# docker-compose.yaml's leader and four members (N=3, W=2, R=2), hostnames leader and
# member1-4, port 13337 each, data in named volumes.
#
#   image          assemble target/docker/ from the release binaries and build dynamo:local
#   up             start the ring detached and wait until every node answers
#   add-members    add-node each member at the leader, printing each result
#   client [ARG]   the REPL on the leader (script mode when stdin is not a terminal);
#                  ARGs replace the client's arguments
#   down           stop and remove the containers, keep the volumes
#   clean          down and remove the volumes
#   compose ARG... run docker compose (v2) or docker-compose (v1) on this project
#
# COMPOSE_PROJECT_NAME picks the project (tests use their own, so they never touch
# the volumes of the ring you run by hand).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release}
IMAGE=dynamo:local
CONTEXT=target/docker
NODES=(leader member1 member2 member3 member4)
# How long `up` waits for every node to report healthy. Healthchecks run every 2 s;
# a node listens well under a second after it starts.
UP_TIMEOUT_S=60

# The ring's cluster secret and admin token, made on the host once per compose
# project and mounted read-only at /secrets in every container.
export DYNAMO_SECRETS=${DYNAMO_SECRETS:-$PWD/data/docker-secrets/${COMPOSE_PROJECT_NAME:-dynamo}}
ensure_secrets() {
  [[ -f $DYNAMO_SECRETS/cluster.secret && -f $DYNAMO_SECRETS/admin.token ]] && return
  mkdir -p "$DYNAMO_SECRETS"
  chmod 700 "$DYNAMO_SECRETS"
  (umask 077
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$DYNAMO_SECRETS/cluster.secret"
    echo "dyn_$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$DYNAMO_SECRETS/admin.token")
  echo "made a cluster secret and an admin token in $DYNAMO_SECRETS"
}

# `docker compose` (v2) when the plugin is there, else `docker-compose` (v1).
compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  elif command -v docker-compose >/dev/null; then
    docker-compose "$@"
  else
    echo "neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 1
  fi
}

# The image context: the binaries and every shared library ldd names (copied with
# their paths, symlinks resolved), the dynamic loader among them; an nsswitch.conf so
# hostnames resolve through /etc/hosts, then docker's DNS; and empty /data, /root, /tmp,
# /history (the client's history volume).
image() {
  local rootfs=$CONTEXT/rootfs
  for b in dynamo client; do
    [[ -x $BIN/$b ]] || { echo "$BIN/$b is missing; run 'make build' first" >&2; exit 1; }
  done
  rm -rf "$CONTEXT"
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/data" "$rootfs/root" "$rootfs/tmp" "$rootfs/history"
  chmod 1777 "$rootfs/tmp"
  chmod 700 "$rootfs/root"
  local libs=()
  for b in dynamo client; do
    # Debug info is most of the file and nothing a container needs.
    strip -o "$rootfs/usr/local/bin/$b" "$BIN/$b"
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
    while read -r lib; do libs+=("$lib"); done < <(ldd "$BIN/$b" | grep -o '/[^ ]*')
  done
  for lib in $(printf '%s\n' "${libs[@]}" | sort -u); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
  cp docker/Dockerfile "$CONTEXT/Dockerfile"
  # FROM scratch: the build pulls nothing (legacy builder or BuildKit alike).
  local log=target/docker-build.log
  if ! docker build -t "$IMAGE" "$CONTEXT" >"$log" 2>&1; then
    cat "$log" >&2
    echo "docker build failed" >&2
    exit 1
  fi
  echo "image $IMAGE built from $BIN/dynamo and $BIN/client ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
}

health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null || echo missing; }

# Waits until the named services' containers are healthy.
wait_healthy() {
  local deadline=$((SECONDS + UP_TIMEOUT_S)) pending
  while :; do
    pending=()
    for s in "$@"; do
      local id
      id=$(compose ps -q "$s" 2>/dev/null || true)
      [[ -n $id && $(health "$id") == healthy ]] || pending+=("$s")
    done
    [[ ${#pending[@]} == 0 ]] && return 0
    if ((SECONDS >= deadline)); then
      echo "not healthy after ${UP_TIMEOUT_S}s: ${pending[*]}; see 'make logs-docker'" >&2
      return 1
    fi
    sleep 0.5
  done
}

up() {
  ensure_secrets
  compose up -d "${NODES[@]}"
  wait_healthy "${NODES[@]}"
  echo "ring up: leader leader:13337, members member1-4:13337 (REPL: make run-client-docker)"
  echo "cluster secret: $DYNAMO_SECRETS/cluster.secret; admin token: $DYNAMO_SECRETS/admin.token"
}

# Like `make testcase`: an add-node that fails (e.g. already a member) is printed, and
# the REPL still opens. </dev/null: run must not eat the REPL's stdin.
add_members() {
  compose run --rm -T testcase </dev/null || true
}

client() {
  docker image inspect "$IMAGE" >/dev/null 2>&1 ||
    { echo "no image $IMAGE yet; run 'make run-db-docker' first" >&2; exit 1; }
  local tty=()
  [[ -t 0 && -t 1 ]] || tty=(-T)
  ensure_secrets
  compose run --rm "${tty[@]}" client "$@"
}

case ${1:-} in
  image) image ;;
  up) up ;;
  add-members) add_members ;;
  client) shift; client "$@" ;;
  down) compose down --remove-orphans ;;
  clean) compose down -v --remove-orphans ;;
  compose) shift; compose "$@" ;;
  *) echo "usage: $0 image|up|add-members|client [ARG]...|down|clean|compose ARG..." >&2; exit 2 ;;
esac
