#!/usr/bin/env bash
# The container deployment, tested on this Docker host (run by .ci/run):
# builds the image with no registry (deploy/build-image.sh), makes the
# cluster's certificates (`pygmy-server --make-certs`), brings up
# compose.yaml (raft, 3 catalog + 3 order replicas + the frontend, TLS
# between every pair of nodes, a cluster token from an env file), drives
# `pygmy-client load --check` through the frontend over HTTPS while it
# crashes one container (SIGKILL; the restart policy brings it back),
# pauses another and cuts a third off the network, one after the other;
# then checks every promise, shows `pygmy-client status`, checks that an
# internal endpoint refuses a caller without the token or without a
# certificate of the cluster's CA, and tears everything down.
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
topology="$etc/compose.toml"
printf 'PYGMY_TOKEN=%s\nPYGMY_ETC=%s\n' "$token" "$etc" >"$env_file"
chmod 600 "$env_file"
dc() { "${compose[@]}" -p "$project" --env-file "$env_file" -f compose.yaml "$@"; }
load_pid=""
# What failed, said again after the nodes' logs (CI shows the end).
failed=""
trap 'failed="line $LINENO: \`$BASH_COMMAND\` exited $?"' ERR
cleanup() {
  status=$?
  if [ -n "$load_pid" ]; then kill "$load_pid" 2>/dev/null || true; fi
  if [ "$status" -ne 0 ]; then
    echo "== compose-test failed; the nodes' last log lines:"
    dc logs --tail 15 2>&1 | tail -120 || true
    echo "== compose-test FAILED (exit $status): ${failed:-see above}"
  fi
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "the image"
deploy/build-image.sh pygmy-server:local
step "the client, and the cluster's certificates"
cargo build --locked -q -p pygmy-client -p pygmy-server --bins
client=target/debug/pygmy-client
target/debug/pygmy-server --config "$topology" --make-certs "$etc/certs"
chmod 755 "$etc/certs"
# Each node's key, mode 0600, to the containers' user (the image runs as
# 10001); the operator's key stays with us.
for node in frontend catalog-a order-a catalog-b order-b catalog-c order-c; do
  chown 10001:10001 "$etc/certs/$node.key" 2>/dev/null || chmod 644 "$etc/certs/$node.key"
done
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
# Over HTTPS, trusting the CA of the topology's [tls].
"$client" --frontend https://172.28.0.10:8010 load --duration 60s --concurrency 32 --rate 600 \
  --check --topology "$topology" --report "$work/report.json" >"$work/load.log" 2>&1 &
load_pid=$!
sleep 8

# The leader of a service, as `pygmy-client status` shows it (a
# replication without leaders: its first replica).
leader() {
  "$client" status --topology "$topology" --interval 100ms \
    | awk -v role="$1" '$2 == role && $6 == "leader" { l = $1 } $2 == role && !f { f = $1 }
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
# Docker may refuse the address for a moment after the disconnect: try
# again, saying why.
for attempt in 1 2 3 4 5; do
  if docker network connect --ip "$ip" "$network" "$(container "$victim")"; then
    break
  fi
  [ "$attempt" -lt 5 ] || { echo "compose-test: cannot reconnect $victim" >&2; exit 1; }
  echo "docker network connect failed (attempt $attempt); again in 1 s"
  sleep 1
done
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
"$client" status --topology "$topology"

step "an internal endpoint without the token, or without a certificate"
# PUT /item/1 over TLS, with (certificate, token): its status.
put() {
  python3 - "$etc/certs" "$1" "$2" <<'PY'
import http.client, ssl, sys
certs, cert, token = sys.argv[1], sys.argv[2], sys.argv[3]
context = ssl.create_default_context(cafile=f"{certs}/ca.pem")
if cert:
    context.load_cert_chain(f"{certs}/{cert}.pem", f"{certs}/{cert}.key")
connection = http.client.HTTPSConnection("172.28.0.11", 8011, context=context, timeout=5)
headers = {"x-pygmy-token": token} if token else {}
connection.request("PUT", "/item/1", body='{"count": 1}', headers=headers)
print(connection.getresponse().status)
PY
}
expect() {
  echo "PUT /item/1 $1: $2"
  [ "$2" = "$3" ] || { echo "compose-test: expected $3" >&2; exit 1; }
}
expect "with the operator's certificate, without the token" "$(put client '')" 401
expect "with the token, without a certificate" "$(put '' "$token")" 401
expect "with the operator's certificate and the token" "$(put client "$token")" 201

step "compose-test: ok"
