#!/usr/bin/env bash
# Benchmark: does a store given more machines sell faster? Side by side in
# one run (docs/scaling.md, "Scale-out: the figures"):
#
#   1. buys/s and p99 of a store of 1, 2 and 4 shards per service (three
#      raft replicas each), with EVERY node (frontends, replicas) a process
#      of its own in a CPU cgroup of the same small quota, so that the two
#      cores stand in for many small machines; one frontend per shard, a
#      load generator per frontend (outside the quotas), CONNECTIONS
#      each, buys of 64 items spread over the shards; the ratio to one
#      shard. The quota is honest when every node of the largest store at
#      once fits the machine: 4 shards are 28 nodes, 28 x 4% = 1.12 of
#      the 2 cores, the rest for the load generators, so no node waits
#      for the machine rather than for its quota;
#   2. a hot item: the same stores, 3/4 of each frontend's connections
#      buying item 1 and 1/4 the 63 others: the hot item's rate and the
#      others';
#   3. a buy's CPU cost on the default store (one shard, one process, no
#      quota): CPU seconds of the store per 1,000 buys at 1 and at 64
#      connections;
#   4. the anchor: a 3-member etcd (Debian's etcd-server, one process per
#      member, data dirs of their own) on the same cores, its durable
#      puts/s and create-if-absent transactions/s through its HTTP gateway
#      at 64 connections (wrk), right after Pygmy's one-shard buys/s at 64
#      connections (no quota), and the ratio.
#
# Usage: bench/scale-out.sh [SECONDS] [QUOTA_PERCENT] [CONNECTIONS]
#        (default 10 s, 4% of a core per node, 32 connections per frontend)
# Needs root (the cgroup v1 cpu controller at /sys/fs/cgroup/cpu, or v2 at
# /sys/fs/cgroup). Installs wrk when missing; fetches etcd-server into
# target/tools (unpacked, not installed). Every process it starts is
# stopped on exit, and every cgroup it made removed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
quota=${2:-4}
connections=${3:-32}
# 1 ms of CPU per period (the kernel's smallest quota), the period set
# by the percent: 4% is 1 ms every 25 ms.
quota_us=1000
period_us=$((100000 / quota))
items=64

. bench/lib.sh
ensure_wrk

work=$(mktemp -d)
pids=()
cgroups=()
cleanup() {
  stop_store
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # The nodes' cgroups before their parent.
  local i
  for ((i = ${#cgroups[@]} - 1; i >= 0; i--)); do rmdir "${cgroups[$i]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The cgroup of one node: v1's cpu controller, or v2's cpu.max.
if [ -d /sys/fs/cgroup/cpu ] && [ -w /sys/fs/cgroup/cpu ]; then
  cgroot=/sys/fs/cgroup/cpu/pygmy-scale-out
  make_cgroup() { # name -> path
    local group=$cgroot/$1
    mkdir -p "$group"
    echo "$period_us" >"$group/cpu.cfs_period_us" && echo "$quota_us" >"$group/cpu.cfs_quota_us" \
      || { echo "scale-out: cannot set the quota of $group" >&2; return 1; }
    echo "$group"
  }
  procs=cgroup.procs
elif [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
  cgroot=/sys/fs/cgroup/pygmy-scale-out
  make_cgroup() {
    mkdir -p "$cgroot"
    echo +cpu >"$cgroot/cgroup.subtree_control" 2>/dev/null || true
    local group=$cgroot/$1
    mkdir -p "$group"
    echo "$quota_us $period_us" >"$group/cpu.max" \
      || { echo "scale-out: cannot set the quota of $group" >&2; return 1; }
    echo "$group"
  }
  procs=cgroup.procs
else
  echo "scale-out: no writable cpu cgroup controller (run as root)" >&2
  exit 1
fi
cgroups+=("$cgroot")

echo "== building (release)"
cargo build --release --locked -q -p pygmy-server -p pygmy-client
bin=$PWD/target/release
client=$bin/pygmy-client

# 64 books, stock that never runs out.
python3 - "$work/books.toml" "$items" <<'PY'
import sys
path, items = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(1, items + 1):
        f.write(f'[[book]]\nid = {i}\ntitle = "Book {i}"\ntopic = "bench"\ncost = 10\ncount = 1000000000\n\n')
PY

# The topology of SHARDS shards per service, three replicas each, and
# SHARDS frontends, on ports from 9300 up.
topology() { # shards dir
  python3 - "$1" "$2" "$work/books.toml" "$items" <<'PY'
import sys
shards, out, books, items = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
port = 9300
lines = [f'log_dir = "{out}/logs"', 'token = "scale-out-bench-token"', f'catalog_file = "{books}"', ""]
def node(name, role, shard=None):
    global port
    port += 1
    lines.extend(["[[node]]", f'name = "{name}"', f'role = "{role}"', f'addr = "127.0.0.1:{port}"'])
    if role != "frontend":
        lines.append(f'data_dir = "{out}/data/{name}"')
    if shard is not None and shards > 1:
        lines.append(f'shard = "{shard}"')
    lines.append("")
if shards > 1:
    for s in range(shards):
        lines.extend(["[[shard]]", f'name = "catalog-{s}"', 'role = "catalog"'])
        if s > 0:
            lines.append(f"first_item = {1 + s * items // shards}")
        lines.append("")
    for s in range(shards):
        lines.extend(["[[shard]]", f'name = "order-{s}"', 'role = "order"', ""])
for s in range(shards):
    node(f"frontend-{s}", "frontend")
for s in range(shards):
    for r in "abc":
        node(f"catalog-{s}{r}", "catalog", f"catalog-{s}")
        node(f"order-{s}{r}", "order", f"order-{s}")
open(f"{out}/cluster.toml", "w").write("\n".join(lines))
PY
}

# Starts every node of DIR's topology as a process of its own, each in a
# cgroup of the quota (with LIMIT=1), and waits until every frontend is
# ready. Sets node_pids.
node_pids=()
start_nodes() { # dir limit
  local dir=$1 limit=$2 name
  node_pids=()
  for name in $(awk -F'"' '/^name = / && prev ~ /^\[\[node\]\]/ {print $2} {prev = $0}' "$dir/cluster.toml"); do
    local join=/dev/null
    if [ "$limit" = 1 ]; then
      local group
      group=$(make_cgroup "$(basename "$dir")-$name") || exit 1
      cgroups+=("$group")
      join=$group/$procs
    fi
    # Into its cgroup before it starts, so that every thread it makes is
    # held to the quota (a process moved once running leaves the threads
    # it already has behind).
    sh -c 'echo $$ >"$1" && shift && exec "$@"' sh "$join" \
      "$bin/pygmy-server" --config "$dir/cluster.toml" --node "$name" >"$dir/$name.out" 2>&1 &
    local pid=$!
    pids+=("$pid")
    node_pids+=("$pid")
  done
  local frontends
  frontends=$(frontend_urls "$dir")
  for url in $frontends; do
    for _ in $(seq 600); do
      curl -sf "$url/ready" >/dev/null && break
      sleep 0.1
    done
    curl -sf "$url/ready" >/dev/null || { echo "scale-out: $url is not ready; see $dir" >&2; exit 1; }
  done
}
stop_nodes() {
  for pid in "${node_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${node_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  node_pids=()
}
frontend_urls() { # dir
  awk -F'"' '/^name = "frontend/ {f = 1} f && /^addr = / {print "http://" $2; f = 0}' "$1/cluster.toml"
}
# The sum over DIR's raft groups of each group's highest term: its growth
# over a run is the elections held during it.
terms() { # dir
  awk -F'"' '/^name = / {n = $2} /^addr = / {print n, $2}' "$1/cluster.toml" \
    | while read -r name addr; do
        case $name in frontend*) continue ;; esac
        term=$(curl -sf "http://$addr/metrics" | awk '/^pygmy_raft_term/ {print $2; exit}')
        echo "${name%?} ${term:-0}"
      done \
    | awk '{if ($2 > max[$1]) max[$1] = $2} END {for (g in max) s += max[g]; print s + 0}'
}
# CPU seconds (user + system) of PIDS, from /proc.
cpu_seconds() {
  local ticks
  ticks=$(getconf CLK_TCK)
  for pid in "$@"; do
    awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0
  done | awk -v t="$ticks" '{s += $1} END {printf "%.3f", s / t}'
}
# Buys through every frontend of DIR at once, CONNECTIONS each, for the
# run's seconds: "buys/s p99_ms" over all of them (the worst p99).
buys() { # dir connections
  local dir=$1 connections=$2 i=0 url
  local outs=()
  for url in $(frontend_urls "$dir"); do
    "$client" --frontend "$url" load --duration "${seconds}s" --concurrency "$connections" \
      --mix buy=100 --items "1-$items" --seed $((677 + i)) --wait 0s >"$dir/load-$i.txt" 2>&1 &
    outs+=("$!")
    i=$((i + 1))
  done
  for pid in "${outs[@]}"; do wait "$pid"; done
  cat "$dir"/load-*.txt | awk '$1 == "buy" {ok += $3; errors += $4; if ($8 > p99) p99 = $8}
      END {printf "%.0f %.1f %d\n", ok / S, p99, errors}' S="$seconds"
}

declare -A rate p99 elections
echo "== scale-out: 1, 2 and 4 shards, every node limited to ${quota}% of a core (${quota_us} us per ${period_us} us)"
for shards in 1 2 4; do
  dir=$work/shards-$shards
  mkdir -p "$dir"
  topology "$shards" "$dir"
  start_nodes "$dir" 1
  "$client" --frontend "$(frontend_urls "$dir" | head -1)" load --requests 200 --concurrency 8 \
    --mix buy=100 --items "1-$items" --wait 0s >/dev/null 2>&1 || true
  before=$(terms "$dir")
  read -r r p e < <(buys "$dir" "$connections")
  after=$(terms "$dir")
  [ "$before" -gt 0 ] || { echo "scale-out: no raft term read from the nodes" >&2; exit 1; }
  elections[$shards]=$((after - before))
  rate[$shards]=$r
  p99[$shards]=$p
  echo "$shards shard(s): $r buys/s, p99 $p ms ($connections connections per frontend, $shards frontend(s); failed buys: $e; elections during the run: ${elections[$shards]})"
  stop_nodes
done

# Buys through every frontend of DIR at once for the run's seconds, 3/4
# of the connections of each on item 1 and 1/4 on the other items:
# "hot_buys/s other_buys/s".
hot_buys() { # dir
  local dir=$1 i=0 url
  local outs=()
  for url in $(frontend_urls "$dir"); do
    "$client" --frontend "$url" load --duration "${seconds}s" --concurrency $((connections * 3 / 4)) \
      --mix buy=100 --items 1-1 --seed $((1677 + i)) --wait 0s >"$dir/hot-$i.txt" 2>&1 &
    outs+=("$!")
    "$client" --frontend "$url" load --duration "${seconds}s" --concurrency $((connections / 4)) \
      --mix buy=100 --items "2-$items" --seed $((2677 + i)) --wait 0s >"$dir/cold-$i.txt" 2>&1 &
    outs+=("$!")
    i=$((i + 1))
  done
  for pid in "${outs[@]}"; do wait "$pid"; done
  local hot cold
  hot=$(cat "$dir"/hot-*.txt | awk '$1 == "buy" {ok += $3} END {printf "%.0f", ok / S}' S="$seconds")
  cold=$(cat "$dir"/cold-*.txt | awk '$1 == "buy" {ok += $3} END {printf "%.0f", ok / S}' S="$seconds")
  echo "$hot $cold"
}

declare -A hot cold
echo "== a hot item: $((connections * 3 / 4)) of each frontend's $connections connections buy item 1, $((connections / 4)) the other $((items - 1)) (same quota)"
for shards in 1 2 4; do
  dir=$work/hot-$shards
  mkdir -p "$dir"
  topology "$shards" "$dir"
  start_nodes "$dir" 1
  read -r h c < <(hot_buys "$dir")
  hot[$shards]=$h
  cold[$shards]=$c
  echo "$shards shard(s): item 1 $h buys/s, the other items $c buys/s"
  stop_nodes
done


echo "== a buy's CPU cost: the default store (one shard, 3+3, one process), no quota"
dir=$work/cost
mkdir -p "$dir"
topology 1 "$dir"
"$bin/pygmy-server" --config "$dir/cluster.toml" >"$dir/store.out" 2>&1 &
store=$!
pids+=("$store")
node_pids=("$store")
for _ in $(seq 600); do
  curl -sf "$(frontend_urls "$dir")/ready" >/dev/null && break
  sleep 0.1
done
declare -A cost cost_rate
for conns in 1 64; do
  before=$(cpu_seconds "$store")
  read -r r p e < <(buys "$dir" "$conns")
  after=$(cpu_seconds "$store")
  total=$(awk -v r="$r" -v s="$seconds" 'BEGIN {printf "%d", r * s}')
  cost[$conns]=$(awk -v a="$after" -v b="$before" -v n="$total" 'BEGIN {printf "%.3f", (a - b) / n * 1000}')
  cost_rate[$conns]=$r
  echo "$conns connection(s): $r buys/s, p99 $p ms; ${cost[$conns]} CPU s per 1,000 buys"
done
# Pygmy's figure for the anchor: one shard, no quota, 64 connections.
pygmy_64=${cost_rate[64]}
stop_nodes

echo "== the anchor: etcd (3 members, Debian's etcd-server), right after"
tools=target/tools
if [ ! -x "$tools/etcd" ]; then
  rm -rf "$tools/etcd-deb"
  mkdir -p "$tools/etcd-deb"
  (cd "$tools/etcd-deb" && { apt-get download -qq etcd-server 2>/dev/null || {
    apt-get update -qq && apt-get download -qq etcd-server; }; })
  dpkg-deb -x "$tools"/etcd-deb/etcd-server_*.deb "$tools/etcd-deb/x"
  cp "$tools/etcd-deb/x/usr/bin/etcd" "$tools/etcd"
  rm -rf "$tools/etcd-deb"
fi
cluster="e0=http://127.0.0.1:9480,e1=http://127.0.0.1:9481,e2=http://127.0.0.1:9482"
etcd_pids=()
for i in 0 1 2; do
  "$tools/etcd" --name "e$i" --data-dir "$work/etcd-$i" \
    --listen-peer-urls "http://127.0.0.1:948$i" --initial-advertise-peer-urls "http://127.0.0.1:948$i" \
    --listen-client-urls "http://127.0.0.1:947$i" --advertise-client-urls "http://127.0.0.1:947$i" \
    --initial-cluster "$cluster" --initial-cluster-state new --logger zap --log-level error \
    >"$work/etcd-$i.log" 2>&1 &
  pids+=("$!")
  etcd_pids+=("$!")
done
leader_url=""
for _ in $(seq 300); do
  for i in 0 1 2; do
    if curl -sf -X POST "http://127.0.0.1:947$i/v3/maintenance/status" -d '{}' 2>/dev/null \
      | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["leader"] == s["header"]["member_id"] else 1)' 2>/dev/null; then
      leader_url="http://127.0.0.1:947$i"
    fi
  done
  [ -n "$leader_url" ] && break
  sleep 0.1
done
[ -n "$leader_url" ] || { echo "scale-out: etcd elected no leader; see $work/etcd-*.log" >&2; exit 1; }
# A new key for each request: 16 characters of the base64 alphabet (a
# prefix and 12 digits), which the gateway takes as they are.
cat >"$work/put.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  local key = string.format("cHV0%012d", n)
  return wrk.format("POST", "/v3/kv/put", {["Content-Type"] = "application/json"},
    '{"key":"' .. key .. '","value":"dmFsdWU="}')
end
LUA
# Create-if-absent: the put only if the key was never created.
cat >"$work/txn.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  local key = string.format("dHhu%012d", n)
  return wrk.format("POST", "/v3/kv/txn", {["Content-Type"] = "application/json"},
    '{"compare":[{"key":"' .. key .. '","target":"CREATE","create_revision":"0"}],' ..
    '"success":[{"requestPut":{"key":"' .. key .. '","value":"dmFsdWU="}}]}')
end
LUA
etcd_rate() { # script -> req/s
  local out
  out=$(wrk -t1 -c64 -d"${seconds}s" -s "$1" "$leader_url")
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
    echo "etcd answered errors under wrk:" >&2
    echo "$out" >&2
    return 1
  fi
  echo "$out" | awk '/^Requests\/sec/ {printf "%.0f", $2}'
}
etcd_puts=$(etcd_rate "$work/put.lua")
etcd_txns=$(etcd_rate "$work/txn.lua")
echo "etcd: $etcd_puts puts/s, $etcd_txns create-if-absent transactions/s (64 connections, its leader)"

echo
echo "== scale-out.sh: figures ($seconds s each, quota ${quota}% of a core per node)"
printf '%-34s %12s %10s %8s %10s\n' "store" "buys/s" "p99 ms" "ratio" "elections"
for shards in 1 2 4; do
  ratio=$(awk -v a="${rate[$shards]}" -v b="${rate[1]}" 'BEGIN {printf "%.2fx", a / b}')
  printf '%-34s %12s %10s %8s %10s\n' "$shards shard(s), every node ${quota}%" "${rate[$shards]}" "${p99[$shards]}" "$ratio" "${elections[$shards]}"
done
for shards in 1 2 4; do
  printf '%-34s %12s %10s %8s\n' "hot item 1, $shards shard(s)" "${hot[$shards]}" "" \
    "$(awk -v a="${hot[$shards]}" -v b="${hot[1]}" 'BEGIN {printf "%.2fx", a / b}')"
  printf '%-34s %12s %10s %8s\n' "the other items, $shards shard(s)" "${cold[$shards]}" "" \
    "$(awk -v a="${cold[$shards]}" -v b="${cold[1]}" 'BEGIN {printf "%.2fx", a / b}')"
done
printf '%-34s %12s %10s\n' "CPU s per 1,000 buys, 1 conn" "${cost[1]}" "(${cost_rate[1]} buys/s)"
printf '%-34s %12s %10s\n' "CPU s per 1,000 buys, 64 conns" "${cost[64]}" "(${cost_rate[64]} buys/s)"
printf '%-34s %12s\n' "etcd puts/s (64 conns)" "$etcd_puts"
printf '%-34s %12s\n' "etcd create-if-absent txns/s" "$etcd_txns"
printf '%-34s %12s\n' "Pygmy buys/s, 1 shard, 64 conns" "$pygmy_64"
printf '%-34s %12s\n' "ratio to etcd's puts" "$(awk -v a="$pygmy_64" -v b="$etcd_puts" 'BEGIN {printf "%.2fx", a / b}')"
