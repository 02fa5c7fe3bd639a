#!/usr/bin/env bash
# Benchmark: buys per second through the default store (raft 3+3), this
# checkout against a base revision, side by side, alternating.
#
# Builds pygmy-server (release) from this checkout and from BASE (in a
# worktree with its own target directory), and pygmy-client from this
# checkout (the same load generator for both). Each run starts the default
# store with stock that never runs out, warms up with 1,000 buys, then
# drives BUYS buys with 64 clients and prints buys/s, p50 and p99 (ms).
#
# Usage: bench/buys.sh [BASE] [BUYS] [ROUNDS]   (default HEAD~1, 15000, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-HEAD~1}
buys=${2:-15000}
rounds=${3:-2}

work=$(mktemp -d)
. bench/lib.sh
cleanup() {
  stop_store
  git worktree remove --force "$work/base" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building this checkout and $base (release)"
cargo build --release --locked -q -p pygmy-server -p pygmy-client
cp target/release/pygmy-server "$work/head"
client=$PWD/target/release/pygmy-client
git worktree add -q --detach "$work/base" "$base"
(cd "$work/base" && CARGO_TARGET_DIR="$OLDPWD/target/bench-base" cargo build --release --locked -q -p pygmy-server)
cp target/bench-base/release/pygmy-server "$work/base-bin"
sed 's/^count = 100$/count = 1000000000/' examples/books.toml >"$work/books.toml"

run() { # binary label
  local dir="$work/run-$2"
  start_store "$1" "$dir" "$work/books.toml"
  "$client" load --requests 1000 --concurrency 64 --mix buy=100 >/dev/null
  local out
  out=$("$client" load --requests "$buys" --concurrency 64 --mix buy=100)
  echo "$2 $(echo "$out" | awk '/^buy/ {print $5, $6, $8}')"
  stop_store
  rm -rf "$dir"
}

echo "label buys/s p50_ms p99_ms"
for _ in $(seq "$rounds"); do
  run "$work/head" head
  run "$work/base-bin" base
done
