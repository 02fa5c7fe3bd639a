#!/usr/bin/env bash
# Benchmark: can `pygmy-client load` drive a Pygmy frontend as hard as wrk?
#
# Starts the default local store (release build, data in a temporary
# directory), then measures cached lookups (`GET /lookup?id=1`) for the same
# time and connection count with wrk, then with `pygmy-client load`, and
# prints both rates and their ratio. The goal is a ratio of at least 0.8, so
# that the generator is never what limits a measurement.
#
# Usage: bench/load-vs-wrk.sh [SECONDS] [CONNECTIONS]   (default 10 s, 32)
# Needs wrk (Debian package `wrk`); installs it with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}

. bench/lib.sh
ensure_wrk
cargo build --release --locked -q -p pygmy-server -p pygmy-client

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
(cd "$work" && exec "$OLDPWD/target/release/pygmy-server" >"$work/server.log" 2>&1) &
server_pid=$!
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:8010/health >/dev/null && break
  sleep 0.1
done
url='http://127.0.0.1:8010/lookup?id=1'
curl -sf "$url" >/dev/null   # fill the cache

echo "== wrk: ${seconds}s, $connections connections, 2 threads"
wrk_out=$(wrk -t2 -c"$connections" -d"${seconds}s" "$url")
echo "$wrk_out" | sed -n '/Latency/p;/Requests\/sec/p'
wrk_rate=$(echo "$wrk_out" | awk '/Requests\/sec/ {print $2}')

echo "== pygmy-client load: ${seconds}s, $connections workers"
load_out=$(target/release/pygmy-client --json load --duration "${seconds}s" --concurrency "$connections" \
  --mix lookup=1 --items 1-1)
load_rate=$(echo "$load_out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput"])')
echo "$load_out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
l = r["operations"]["lookup"]["latency_ms"]
print("    %d requests, p50 %.2f ms, p99 %.2f ms" % (r["requests"], l["p50"], l["p99"]))'

python3 - "$wrk_rate" "$load_rate" <<'PY'
import sys
wrk, load = float(sys.argv[1]), float(sys.argv[2])
ratio = load / wrk
print(f"wrk {wrk:,.0f} req/s, pygmy-client load {load:,.0f} req/s: ratio {ratio:.2f} (goal >= 0.80): {'ok' if ratio >= 0.8 else 'BELOW GOAL'}")
PY
