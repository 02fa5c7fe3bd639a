#!/usr/bin/env bash
# Benchmark: the nodes' request path, this checkout against a baseline
# revision, side by side in one run.
#
# Builds `pygmy-server` (release) from this checkout and from BASE (a git
# revision, built in a worktree with its own target directory), then runs
# each in turn, three times, alternating which goes first, on the default local store, and drives
# with wrk (1 thread, CONNECTIONS connections, SECONDS each):
#   - `GET /lookup?id=1` on the frontend, a cache hit: the frontend's whole
#     path without a backend call;
#   - `GET /health` on catalog-a: the route parse, the response, nothing else.
# Prints each figure and the ratio this checkout / BASE (median of the runs).
#
# Usage: bench/request-path.sh [BASE] [SECONDS] [CONNECTIONS]
#        (default: the first parent of HEAD, 8 s, 64 connections)
# Needs wrk (Debian package `wrk`); installs it with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-HEAD~1}
seconds=${2:-8}
connections=${3:-64}

. bench/lib.sh
ensure_wrk

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  git worktree remove --force "$work/base" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building this checkout and $base (release)"
cargo build --release --locked -q -p pygmy-server
cp target/release/pygmy-server "$work/head"
git worktree add -q --detach "$work/base" "$base"
(cd "$work/base" && CARGO_TARGET_DIR="$OLDPWD/target/bench-base" cargo build --release --locked -q -p pygmy-server)
cp target/bench-base/release/pygmy-server "$work/base-bin"

run() { # binary label
  mkdir -p "$work/run-$2"
  (cd "$work/run-$2" && exec "$1" >"$work/run-$2/server.log" 2>&1) &
  server_pid=$!
  for _ in $(seq 200); do
    curl -sf http://127.0.0.1:8010/health >/dev/null && curl -sf http://127.0.0.1:8011/health >/dev/null && break
    sleep 0.1
  done
  curl -sf 'http://127.0.0.1:8010/lookup?id=1' >/dev/null
  sleep 2 # the cache lease
  for target in 'http://127.0.0.1:8010/lookup?id=1' 'http://127.0.0.1:8011/health'; do
    rate=$(wrk -t1 -c"$connections" -d"${seconds}s" "$target" | awk '/Requests\/sec/ {print $2}')
    echo "$2 $target $rate" | tee -a "$work/figures"
  done
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
  rm -rf "$work/run-$2"
}

# Alternating, and each first in turn, so that a drift of the machine
# does not favour one side.
for round in 1 2 3; do
  if [ $((round % 2)) -eq 1 ]; then
    run "$work/base-bin" base; run "$work/head" head
  else
    run "$work/head" head; run "$work/base-bin" base
  fi
done

python3 - "$work/figures" "$base" <<'PY'
import sys, collections
import statistics
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, target, rate = line.split()
    runs[(label, target)].append(float(rate))
best = {key: statistics.median(rates) for key, rates in runs.items()}
print(f"\n{'request':<40} {'base ' + sys.argv[2]:>18} {'this checkout':>14} {'ratio':>6}")
for target in sorted({t for _, t in best}):
    b, h = best[("base", target)], best[("head", target)]
    print(f"{target:<40} {b:>18,.0f} {h:>14,.0f} {h / b:>6.2f}")
PY
