#!/usr/bin/env bash
# The OpenAPI contract, fuzzed (run by .ci/run): starts the default store
# (raft 3+3 and the frontend, on 127.0.0.1:8010-8016) in a temporary
# directory, then runs schemathesis (from PyPI, in a venv under target/)
# against every role's document in docs/openapi/:
#  - every operation without the token: a public one must answer as its
#    document says, an internal one 401;
#  - every operation with the token, but for the peer protocol (raft and
#    broadcast calls, membership changes), whose valid calls would
#    legitimately unsettle the cluster under test (a vote in a made-up
#    term, a replica removed): those are fuzzed without the token only.
# A check fails on any server error (5xx) or any answer that does not
# conform to the document (status, content type, headers, body schema).
# One check is left out: positive_data_acceptance, which expects a 2xx for
# every schema-valid request, where the store rightly refuses some (a book
# out of stock is 404, an idempotency key reused for another book 422).
#
#   .ci/openapi-fuzz.sh [EXAMPLES]   # examples per operation (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-60}"

venv=target/venv-schemathesis
if [ ! -x "$venv/bin/st" ]; then
  echo "== installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis==4.32.5'
fi

echo "== building pygmy-server"
cargo build --locked -q -p pygmy-server --bin pygmy-server
server="$PWD/target/debug/pygmy-server"

work=$(mktemp -d)
pid=""
cleanup() {
  status=$?
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ "$status" -ne 0 ] && [ -d "$work/logs" ]; then tail -n 20 "$work"/logs/*.log || true; fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

(cd "$work" && exec "$server" >"$work/stdout.log" 2>&1) &
pid=$!
# Until every node serves (a raft leader elected, every replica caught up).
for node in frontend catalog-a order-a catalog-b order-b catalog-c order-c; do
  for attempt in $(seq 1 150); do
    if "$server" --node "$node" --probe 2>/dev/null; then break; fi
    if [ "$attempt" -eq 150 ]; then echo "openapi-fuzz: $node does not serve" >&2; exit 1; fi
    sleep 0.2
  done
done
token=$(cd "$work" && "$server" --print-token)

peer='^/(replication/|item/propagate/|update$|members)'
run() {
  local role=$1 port=$2; shift 2
  echo "== schemathesis: $role on :$port ${*//$token/<token>}"
  "$venv/bin/st" run "docs/openapi/$role.json" --url "http://127.0.0.1:$port" \
    --checks all --exclude-checks positive_data_acceptance --max-examples "$examples" --generation-deterministic \
    --request-timeout 10 --no-color "$@"
}
for spec in frontend:8010 catalog:8011 order:8012; do
  role=${spec%%:*} port=${spec##*:}
  run "$role" "$port"
  run "$role" "$port" -H "x-pygmy-token: $token" --exclude-path-regex "$peer"
done
echo "== openapi-fuzz: ok"
