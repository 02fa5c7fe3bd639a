#!/usr/bin/env bash
# Benchmark: Pygmy against its baselines, side by side in one run, every
# figure with its ratio to its baseline (docs/benchmarks.md).
#
# Builds release, then measures on this machine:
#   - the storage ceiling: SQLite's durable commits/s, one row and sixteen
#     rows per commit (bench/baselines, `sqlite-commits`);
#   - the forwarding ceiling: a bare hyper server forwarding to two bare
#     hyper backends (`bare-forward`, `bare-backend`), with wrk;
#   - the caching ceiling: nginx proxy_cache over the same two backends;
#   - Pygmy's default store (raft 3+3): cached lookups (wrk), fresh
#     uncached lookups (`[cache] capacity = 0`, wrk), buys at 1, 16, 64 and
#     256 connections and the seed client's mixed session
#     (`pygmy-client load`).
# Installs wrk and nginx-light from Debian's packages when missing. Every
# process it starts is stopped on exit.
#
# Usage: bench/throughput.sh [SECONDS] [CONNECTIONS]   (default 8 s, 64)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
connections=${2:-64}

for tool in wrk:wrk nginx:nginx-light; do
  if ! command -v "${tool%%:*}" >/dev/null; then
    echo "installing ${tool#*:}..."
    apt-get update -qq && apt-get install -y -qq "${tool#*:}" >/dev/null
  fi
done

work=$(mktemp -d)
. bench/lib.sh
pids=()
cleanup() {
  stop_store
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building (release)"
cargo build --release --locked -q -p pygmy-server -p pygmy-client -p pygmy-baselines
bin=$PWD/target/release
client=$bin/pygmy-client

results=()
record() { # name baseline pygmy unit
  results+=("$1|$2|$3|$4")
}
wrk_rate() { # url [connections] -> "req/s p99_ms"
  local out
  out=$(wrk -t1 -c"${2:-$connections}" -d"${seconds}s" --latency "$1")
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
    echo "$1 answered errors under wrk:" >&2
    echo "$out" >&2
    return 1
  fi
  local rate p99
  rate=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}')
  echo "$rate $p99"
}
load_rate() { # concurrency mix -> "req/s p50_ms p99_ms" of the first op line
  local out
  out=$("$client" load --duration "${seconds}s" --concurrency "$1" --mix "$2")
  echo "$out" | awk '$2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ && NR > 2 {print $5, $6, $8; exit}'
}

echo "== storage ceiling: SQLite durable commits"
mkdir -p "$work/sqlite"
sqlite_out=$("$bin/sqlite-commits" "$work/sqlite" 4000)
echo "$sqlite_out"
sqlite_single=$(echo "$sqlite_out" | awk '/_1_per_commit/ {print $3}')
sqlite_grouped=$(echo "$sqlite_out" | awk '/_16_per_commit/ {print $5}')

echo "== forwarding ceiling: bare-forward over two bare backends"
"$bin/bare-backend" 127.0.0.1:9101 & pids+=($!)
"$bin/bare-backend" 127.0.0.1:9102 & pids+=($!)
"$bin/bare-forward" 127.0.0.1:9100 127.0.0.1:9101 127.0.0.1:9102 & pids+=($!)
sleep 0.5
curl -sf -o /dev/null http://127.0.0.1:9100/item/1
wrk -t1 -c"$connections" -d2s http://127.0.0.1:9100/item/1 >/dev/null
read -r forward forward_p99 < <(wrk_rate http://127.0.0.1:9100/item/1)
echo "bare forward: $forward req/s, p99 $forward_p99 ms"

echo "== caching ceiling: nginx proxy_cache over the two backends"
# nginx's workers run as another user: their cache and temporary files
# live where that user may write.
mkdir -p "$work/nginx"
chmod 755 "$work"
chmod 777 "$work/nginx"
cat >"$work/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nodelay on;
  open_file_cache max=1000;
  proxy_cache_path $work/nginx/cache keys_zone=books:10m;
  proxy_temp_path $work/nginx/temp;
  upstream backends { server 127.0.0.1:9101; server 127.0.0.1:9102; keepalive 64; }
  server {
    listen 127.0.0.1:9110;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache books;
      proxy_cache_valid 200 10m;
    }
  }
}
EOF
nginx -c "$work/nginx.conf" -p "$work"
sleep 0.5
curl -sf -o /dev/null http://127.0.0.1:9110/item/1
wrk -t1 -c"$connections" -d2s http://127.0.0.1:9110/item/1 >/dev/null
read -r nginx_rate nginx_p99 < <(wrk_rate http://127.0.0.1:9110/item/1)
echo "nginx proxy_cache: $nginx_rate req/s, p99 $nginx_p99 ms"
kill "$(cat "$work/nginx.pid")"; rm -f "$work/nginx.pid"
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
pids=()

echo "== Pygmy, the default store (raft 3+3), cache on"
sed 's/^count = 100$/count = 1000000000/' examples/books.toml >"$work/books.toml"
start_store "$bin/pygmy-server" "$work/store" "$work/books.toml"
wrk -t1 -c"$connections" -d2s "http://127.0.0.1:8010/lookup?id=1" >/dev/null
read -r cached cached_p99 < <(wrk_rate "http://127.0.0.1:8010/lookup?id=1")
echo "cached lookup: $cached req/s, p99 $cached_p99 ms"
"$client" load --requests 2000 --concurrency 64 --mix buy=100 >/dev/null
buys=()
for c in 1 16 64 256; do
  read -r rate p50 p99 < <(load_rate "$c" buy=100)
  echo "buys at $c connections: $rate/s, p50 $p50 ms, p99 $p99 ms"
  buys+=("$c|$rate|$p50|$p99")
done
session_out=$("$client" load --duration "${seconds}s" --concurrency "$connections")
session=$(echo "$session_out" | awk '/req\/s \(closed loop/ {print $(NF-5)}')
echo "$session_out" | tail -n +1 | sed -n '1,8p'
stop_store

echo "== Pygmy, the default store, no cache (every lookup fresh from a catalog replica)"
cat >"$work/nocache" <<EOF
#!/usr/bin/env bash
if [ "\${1:-}" = --print-config ]; then
  "$bin/pygmy-server" --print-config | sed 's/^capacity = .*/capacity = 0/'
else
  exec "$bin/pygmy-server" "\$@"
fi
EOF
chmod +x "$work/nocache"
start_store "$work/nocache" "$work/store-nocache" "$work/books.toml"
wrk -t1 -c"$connections" -d2s "http://127.0.0.1:8010/lookup?id=1" >/dev/null
read -r fresh fresh_p99 < <(wrk_rate "http://127.0.0.1:8010/lookup?id=1")
echo "fresh lookup: $fresh req/s, p99 $fresh_p99 ms"
stop_store

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
echo "== $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${seconds} s per figure, wrk -t1 -c$connections"
printf '%-34s %16s %22s %7s\n' measure baseline pygmy ratio
printf '%-34s %16s %22s %7s\n' "lookup, cached (req/s)" "nginx $nginx_rate" "$cached" "$(ratio "$cached" "$nginx_rate")"
printf '%-34s %16s %22s %7s\n' "lookup, fresh (req/s)" "forward $forward" "$fresh" "$(ratio "$fresh" "$forward")"
printf '%-34s %16s %22s %7s\n' "lookup p99 ms, cached / fresh" "$nginx_p99 / $forward_p99" "$cached_p99 / $fresh_p99" ""
for b in "${buys[@]}"; do
  IFS='|' read -r c rate p50 p99 <<<"$b"
  printf '%-34s %16s %22s %7s\n' "buys at $c conn. (/s, p50, p99 ms)" "sqlite $sqlite_single" "$rate, $p50, $p99" "$(ratio "$rate" "$sqlite_single")"
done
printf '%-34s %16s %22s %7s\n' "mixed session (req/s)" "" "$session" ""
printf '%-34s %16s\n' "sqlite rows/s, 16 per commit" "$sqlite_grouped"
