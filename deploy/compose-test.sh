#!/usr/bin/env bash
# The container deployment, tested on this Docker host (run by .ci/run):
# builds the image with no registry (deploy/build-image.sh), brings up
# compose.yaml (raft, 3 catalog + 3 order replicas + the frontend, a
# cluster token from an env file), drives `pygmy-client load --check`
# through the frontend while it crashes one container (SIGKILL; the restart
# policy brings it back), pauses another and cuts a third off the network,
# one after the other; then checks every promise, shows
# `pygmy-client status`, checks that an internal endpoint refuses a caller
# without the token, and tears everything down.
#
# Where no Docker daemon answers, or no compose tool is installed, it says
# why and skips (exit 0), unless PYGMY_REQUIRE_DOCKER=1 (as .ci/run sets
# it: CI runs on a Docker host), in which case that is a failure (exit 1).
#
#   deploy/compose-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# No Docker to test with: a skip, or a failure where Docker is required.
skip() {
  if [ "${PYGMY_REQUIRE_DOCKER:-0}" = 1 ]; then
    echo "compose-test: FAILED: $1 (PYGMY_REQUIRE_DOCKER=1)"
    exit 1
  fi
  echo "compose-test: skipped: $1"
  exit 0
}
if ! docker info >/dev/null 2>&1; then
  skip "no Docker daemon answers (docker info failed)"
fi
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  skip "neither 'docker compose' nor 'docker-compose' is installed"
fi

project=pygmy-ci
work=$(mktemp -d)
env_file="$work/pygmy.env"
token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The topology of compose.yaml, with stock enough that buys go on through
# every fault (the seed's 100 copies a book sell out in seconds).
# The containers' user reads it.
etc="$work/etc"
mkdir -p "$etc"
cp examples/compose.toml "$etc/"
sed 's/^count = .*/count = 1000000/' examples/books.toml >"$etc/books.toml"
chmod 755 "$work" "$etc" && chmod 644 "$etc"/*
printf 'PYGMY_TOKEN=%s\nPYGMY_ETC=%s\n' "$token" "$etc" >"$env_file"
chmod 600 "$env_file"
dc() { "${compose[@]}" -p "$project" --env-file "$env_file" -f compose.yaml "$@"; }
load_pid=""
cleanup() {
  status=$?
  if [ -n "$load_pid" ]; then kill "$load_pid" 2>/dev/null || true; fi
  if [ "$status" -ne 0 ]; then
    echo "== compose-test failed; the nodes' last log lines:"
    dc logs --tail 15 2>&1 | tail -120 || true
  fi
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "the image"
deploy/build-image.sh pygmy-server:local
step "the client"
cargo build --locked -q -p pygmy-client
client=target/debug/pygmy-client
export PYGMY_TOKEN="$token"

nodes=(frontend catalog-a order-a catalog-b order-b catalog-c order-c)
container() { dc ps -q "$1"; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$(container "$1")"; }
wait_healthy() {
  local deadline=$((SECONDS + ${1:-90}))
  for node in "${nodes[@]}"; do
    until [ "$(health "$node")" = healthy ]; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "compose-test: $node is not healthy after ${1:-90} s" >&2
        return 1
      fi
      sleep 1
    done
  done
}

step "docker compose up (${compose[*]})"
dc down -v --remove-orphans >/dev/null 2>&1 || true
dc up -d
wait_healthy 90
echo "every node is healthy"
network=$(docker network ls -q --filter "label=com.docker.compose.project=$project" | head -1)

step "load with --check, through faults"
# A fixed rate (open loop), so that the faults, not the load, set the pace.
"$client" --frontend http://172.28.0.10:8010 load --duration 60s --concurrency 32 --rate 600 \
  --check --topology examples/compose.toml --report "$work/report.json" >"$work/load.log" 2>&1 &
load_pid=$!
sleep 8

# The leader of a service, as `pygmy-client status` shows it (a
# replication without leaders: its first replica).
leader() {
  "$client" status --topology examples/compose.toml --interval 100ms \
    | awk -v role="$1" '$2 == role && $5 == "leader" { l = $1 } $2 == role && !f { f = $1 }
                        END { print (l != "" ? l : f) }'
}
address() { awk -v n="$1" '$0 ~ "name = \"" n "\"" { f = 1 } f && /^addr/ { gsub(/"|:.*/, "", $3); print $3; exit }' examples/compose.toml; }

victim=$(leader order)
crashed=$(container "$victim")
restarts=$(docker inspect -f '{{.RestartCount}}' "$crashed")
echo "crash: SIGKILL to the order leader's process ($victim)"
kill -9 "$(docker inspect -f '{{.State.Pid}}' "$crashed")"
sleep 3
wait_healthy 60
[ "$(docker inspect -f '{{.RestartCount}}' "$crashed")" -gt "$restarts" ] \
  || { echo "compose-test: $victim was not restarted by its restart policy" >&2; exit 1; }
echo "$victim restarted by its restart policy, healthy again"

victim=$(leader catalog)
echo "freeze: docker pause the catalog leader ($victim) for 4 s"
docker pause "$(container "$victim")" >/dev/null
sleep 4
docker unpause "$(container "$victim")" >/dev/null
wait_healthy 60
echo "$victim thawed, healthy again"

victim=$(leader catalog)
ip=$(address "$victim")
echo "partition: docker network disconnect the catalog leader ($victim, $ip) for 4 s"
docker network disconnect "$network" "$(container "$victim")"
sleep 4
docker network connect --ip "$ip" "$network" "$(container "$victim")"
wait_healthy 60
echo "$victim reconnected, healthy again"

step "the load's verdict"
if ! wait "$load_pid"; then
  load_pid=""
  cat "$work/load.log"
  echo "compose-test: the load run or its check failed" >&2
  exit 1
fi
load_pid=""
cat "$work/load.log"

step "pygmy-client status"
"$client" status --topology examples/compose.toml

step "an internal endpoint without the token"
answer() {
  exec 3<>"/dev/tcp/172.28.0.11/8011"
  printf '%s' "$1" >&3
  head -1 <&3 | tr -d '\r'
  exec 3<&-
}
without=$(answer $'PUT /item/1 HTTP/1.0\r\ncontent-length: 12\r\n\r\n{"count": 1}')
echo "PUT /item/1 without the token: $without"
case "$without" in *" 401 "*) ;; *) echo "compose-test: expected 401" >&2; exit 1 ;; esac

step "compose-test: ok"
