#!/usr/bin/env bash
# How the store scales, measured and plotted (docs/scaling.md):
#  - buys/s and cached lookups/s against connections (1 to 256), on the
#    default shape (raft 3+3, one frontend);
#  - 3 against 5 replicas per service, and 1 against 2 frontends, at 64
#    connections;
#  - the default shape again after ORDERS buys (default 1,000,000) have
#    filled the order service.
# Every shape runs in one process on this machine, with its data in a
# directory of the run's own and books whose stock never runs out. Buys
# are driven by `pygmy-client load --mix buy=100` (the load generator's
# own buys/s and p99), cached lookups by wrk (installed from Debian when
# missing). Writes bench/scaling.json and draws docs/scaling-*.svg.
#
#   bench/scaling.sh [SECONDS] [ORDERS]      # defaults: 8 s per figure, 1000000
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
orders=${2:-1000000}

. bench/lib.sh
ensure_wrk

work=$(mktemp -d)
pid=""
loads=()
cleanup() {
  for p in "${loads[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building (release)"
cargo build --release --locked -q -p pygmy-server -p pygmy-client
bin=$PWD/target/release
client=$bin/pygmy-client
sed 's/^count = 100$/count = 1000000000/' examples/books.toml >"$work/books.toml"

# A topology of `catalogs` and `orders` raft replicas and `frontends`
# frontends on 127.0.0.1, frontends from 8010, replicas from 8020.
topology() { # dir catalogs orders frontends
  python3 - "$@" "$work/books.toml" <<'EOF'
import sys
dir, catalogs, orders, frontends, books = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
out = [f'log_dir = "{dir}/logs"', f'catalog_file = "{books}"', 'replication = "raft"', 'store = "sqlite"', ""]
def node(name, role, port, data=True):
    out.extend(["[[node]]", f'name = "{name}"', f'role = "{role}"', f'addr = "127.0.0.1:{port}"'])
    if data:
        out.append(f'data_dir = "{dir}/data/{name}"')
    out.append("")
for i in range(frontends):
    node("frontend" if i == 0 else f"frontend-{i + 1}", "frontend", 8010 + i, data=False)
port = 8020
for i in range(max(catalogs, orders)):
    if i < catalogs:
        node(f"catalog-{i}", "catalog", port); port += 1
    if i < orders:
        node(f"order-{i}", "order", port); port += 1
print("\n".join(out))
EOF
}

start() { # name catalogs orders frontends
  local dir="$work/$1"
  mkdir -p "$dir"
  topology "$dir" "$2" "$3" "$4" >"$dir/cluster.toml"
  (cd "$dir" && exec "$bin/pygmy-server" --config cluster.toml >"$dir/server.log" 2>&1) &
  pid=$!
  local node
  for node in $(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/cluster.toml"); do
    for attempt in $(seq 300); do
      if (cd "$dir" && "$bin/pygmy-server" --config cluster.toml --node "$node" --probe 2>/dev/null); then break; fi
      if [ "$attempt" -eq 300 ]; then echo "$node of $1 does not serve; see $dir/server.log" >&2; exit 1; fi
      sleep 0.1
    done
  done
  # Warm up: connections, caches, the raft leaders' first entries.
  "$client" load --requests 2000 --concurrency 64 --mix buy=100 >/dev/null
}

stop() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
}

# Buys at `connections`, over `frontends` frontends (the connections split
# evenly, one load generator each, run at once): "buys/s p99_ms" (p99: the
# worst of the generators).
buys() { # connections frontends
  local each=$(($1 / $2)) i outs=()
  [ "$each" -ge 1 ] || each=1
  loads=()
  for i in $(seq 0 $(($2 - 1))); do
    "$client" --frontend "http://127.0.0.1:$((8010 + i))" load --duration "${seconds}s" \
      --concurrency "$each" --mix buy=100 >"$work/load-$i.out" &
    loads+=($!)
  done
  for p in "${loads[@]}"; do wait "$p"; done
  loads=()
  for i in $(seq 0 $(($2 - 1))); do outs+=("$work/load-$i.out"); done
  awk '$1 == "buy" { rate += $5; if ($8 > p99) p99 = $8 } END { printf "%.0f %.1f\n", rate, p99 }' "${outs[@]}"
}

# Cached lookups at `connections` over `frontends` frontends (one wrk
# each, at once): "lookups/s p99_ms".
lookups() { # connections frontends
  local each=$(($1 / $2)) i outs=() p
  [ "$each" -ge 1 ] || each=1
  loads=()
  for i in $(seq 0 $(($2 - 1))); do
    wrk -t1 -c"$each" -d"${seconds}s" --latency "http://127.0.0.1:$((8010 + i))/lookup?id=1" >"$work/wrk-$i.out" &
    loads+=($!)
  done
  for p in "${loads[@]}"; do wait "$p"; done
  loads=()
  for i in $(seq 0 $(($2 - 1))); do
    if grep -q "Non-2xx\|Socket errors" "$work/wrk-$i.out"; then
      echo "wrk saw errors:" >&2; cat "$work/wrk-$i.out" >&2; exit 1
    fi
    outs+=("$work/wrk-$i.out")
  done
  awk '/^Requests\/sec/ { rate += $2 }
       $1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 }; if (v > p99) p99 = v }
       END { printf "%.0f %.2f\n", rate, p99 }' "${outs[@]}"
}

results=()
record() { # shape connections buys buy_p99 lookups lookup_p99
  results+=("$1|$2|$3|$4|$5|$6")
  printf '%-28s %5s conn: %7s buys/s (p99 %6s ms)  %8s lookups/s (p99 %6s ms)\n' "$@"
}
measure() { # shape connections frontends
  local b bp l lp
  read -r b bp < <(buys "$2" "$3")
  read -r l lp < <(lookups "$2" "$3")
  record "$1" "$2" "$b" "$bp" "$l" "$lp"
}

echo "== raft 3+3, one frontend, against connections"
start default 3 3 1
for c in 1 4 16 64 256; do measure "3+3, 1 frontend" "$c" 1; done
stop

echo "== raft 5+5, one frontend"
start five 5 5 1
measure "5+5, 1 frontend" 64 1
stop

echo "== raft 3+3, two frontends"
start two 3 3 2
measure "3+3, 2 frontends" 64 2
stop

echo "== the frontend's memory at 1,000 connections (one process per node)"
dir="$work/rss"
mkdir -p "$dir"
topology "$dir" 3 3 1 >"$dir/cluster.toml"
node_pids=()
for node in $(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/cluster.toml"); do
  (cd "$dir" && exec "$bin/pygmy-server" --config cluster.toml --node "$node" >"$dir/$node.out" 2>&1) &
  node_pids+=($!)
  [ "$node" = frontend ] && frontend_pid=$!
done
for node in $(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/cluster.toml"); do
  until (cd "$dir" && "$bin/pygmy-server" --config cluster.toml --node "$node" --probe 2>/dev/null); do sleep 0.1; done
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$frontend_pid/status"; }
idle_kb=$(rss)
ulimit -n 8192 2>/dev/null || true
wrk -t2 -c1000 -d"${seconds}s" "http://127.0.0.1:8010/lookup?id=1" >"$work/wrk-rss.out" &
wrk_pid=$!
peak_kb=$idle_kb
while kill -0 "$wrk_pid" 2>/dev/null; do
  now=$(rss); [ "$now" -gt "$peak_kb" ] && peak_kb=$now
  sleep 0.2
done
hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$frontend_pid/status")
rss_rate=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk-rss.out")
rss_line="frontend RSS: $((idle_kb / 1024)) MiB idle, $((peak_kb / 1024)) MiB at 1,000 connections (high-water mark $((hwm_kb / 1024)) MiB), $rss_rate lookups/s"
echo "$rss_line"
for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${node_pids[@]}"; do wait "$p" 2>/dev/null || true; done

echo "== raft 3+3, one frontend, after $orders buys"
start filled 3 3 1
started=$SECONDS
"$client" load --requests "$orders" --concurrency 64 --mix buy=100 >"$work/fill.out"
fill_line="filled with $orders buys in $((SECONDS - started)) s"
echo "$fill_line"
measure "3+3, after $orders orders" 64 1
du -sb "$work/filled/data"/order-* | sed 's|'"$work"'/filled/data/||' | awk '{printf "  %s: %.1f MB\n", $2, $1 / 1e6}'
stop

echo
echo "== $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${seconds} s per figure"
printf '%s\n' "${results[@]}" | awk -F'|' '{ printf "%-28s %5s conn: %7s buys/s (p99 %6s ms)  %8s lookups/s (p99 %6s ms)\n", $1, $2, $3, $4, $5, $6 }'
echo "$rss_line"
echo "$fill_line"
printf '%s\n' "${results[@]}" | python3 -c '
import json, sys
rows = [dict(zip(["shape", "connections", "buys", "buy_p99_ms", "lookups", "lookup_p99_ms"], line.strip().split("|"))) for line in sys.stdin if line.strip()]
for row in rows:
    for key in ("connections", "buys", "lookups"):
        row[key] = int(float(row[key]))
    for key in ("buy_p99_ms", "lookup_p99_ms"):
        row[key] = float(row[key])
json.dump(rows, open("bench/scaling.json", "w"), indent=1)
print("wrote bench/scaling.json")
'
python3 bench/plot_scaling.py bench/scaling.json docs
