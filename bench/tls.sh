#!/usr/bin/env bash
# Benchmark: what TLS costs. The default store (raft 3+3, one process)
# run plain and with [tls] (every node serving HTTPS, mutual TLS between
# nodes, certificates from `pygmy-server --make-certs`), alternating,
# ROUNDS times each, first in turn: buys per second (pygmy-client load
# --mix buy=100) and cached lookups per second (--mix lookup=100 on one
# book), both at 64 connections with p50 and p99, then the ratios TLS /
# plain. The load generator speaks HTTPS to the frontend when the store
# does (its connections are kept alive, as a real client's would be).
#
# Usage: bench/tls.sh [BUYS] [ROUNDS]   (default 15000, 2; lookups: 4 x BUYS)
set -euo pipefail
cd "$(dirname "$0")/.."
buys=${1:-15000}
rounds=${2:-2}
lookups=$((buys * 4))

work=$(mktemp -d)
pid=
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
}
trap 'stop; rm -rf "$work"' EXIT

echo "== building pygmy-server and pygmy-client (release)"
cargo build --release --locked -q -p pygmy-server -p pygmy-client
server=$PWD/target/release/pygmy-server
client=$PWD/target/release/pygmy-client
sed 's/^count = 100$/count = 1000000000/' examples/books.toml >"$work/books.toml"
"$server" --print-config \
  | sed "s|^log_dir = .*|log_dir = \"logs\"\ncatalog_file = \"$work/books.toml\"|" >"$work/plain.toml"
cp "$work/plain.toml" "$work/tls.toml"
printf '\n[tls]\nca = "certs/ca.pem"\ncert_dir = "certs"\n' >>"$work/tls.toml"
"$server" --config "$work/tls.toml" --make-certs "$work/certs" >/dev/null

run() { # plain|tls -> "label buys/s p50 p99 lookups/s p50 p99"
  local label=$1 dir="$work/run-$1" url=http://127.0.0.1:8010 ca=()
  if [ "$label" = tls ]; then url=https://127.0.0.1:8010 ca=(--ca "$work/certs/ca.pem"); fi
  mkdir -p "$dir"
  (cd "$dir" && exec "$server" --config "$work/$label.toml" >"$dir/server.log" 2>&1) &
  pid=$!
  # load waits for the frontend's /ready first.
  "$client" "${ca[@]}" --frontend "$url" load --requests 1000 --concurrency 64 --mix buy=100 >/dev/null
  local bought looked
  bought=$("$client" "${ca[@]}" --frontend "$url" load --requests "$buys" --concurrency 64 --mix buy=100 \
    | awk '/^buy/ {print $5, $6, $8}')
  looked=$("$client" "${ca[@]}" --frontend "$url" load --requests "$lookups" --concurrency 64 \
    --mix lookup=100 --items 1-1 | awk '/^lookup/ {print $5, $6, $8}')
  echo "$label $bought $looked"
  stop
  rm -rf "$dir"
}

echo "== $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $buys buys and $lookups lookups a run, 64 connections"
printf '%-6s %9s %7s %7s %11s %7s %7s\n' run buys/s p50_ms p99_ms lookups/s p50_ms p99_ms
results=()
for round in $(seq "$rounds"); do
  order=(plain tls)
  [ $((round % 2)) -eq 0 ] && order=(tls plain)
  for label in "${order[@]}"; do
    line=$(run "$label")
    results+=("$line")
    # shellcheck disable=SC2086
    printf '%-6s %9s %7s %7s %11s %7s %7s\n' $line
  done
done
printf '%s\n' "${results[@]}" | awk '
  { n[$1]++; buys[$1] += $2; looks[$1] += $5 }
  END {
    printf "mean   plain %.0f buys/s, %.0f lookups/s; tls %.0f buys/s, %.0f lookups/s\n",
      buys["plain"] / n["plain"], looks["plain"] / n["plain"], buys["tls"] / n["tls"], looks["tls"] / n["tls"]
    printf "tls / plain: buys %.2fx, lookups %.2fx\n",
      (buys["tls"] / n["tls"]) / (buys["plain"] / n["plain"]), (looks["tls"] / n["tls"]) / (looks["plain"] / n["plain"])
  }'
