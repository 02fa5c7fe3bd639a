#!/usr/bin/env bash
# Pygmy's metrics, dashboard and alert rules against a real Prometheus
# (run by .ci/run; Debian's prometheus, unpacked by prometheus-tools.sh):
#  1. promtool checks deploy/prometheus.yml and deploy/alerts.yml, and runs
#     the rules' own tests (deploy/alerts.test.yml);
#  2. the default store runs as seven processes (one per node, on
#     127.0.0.1:8010-8016) in a temporary directory, and Prometheus
#     scrapes it with deploy/prometheus.yml as shipped, while a load runs;
#  3. every target is up, every rule evaluates without error, no alert
#     fires on the healthy store, and every PromQL expression of
#     docs/grafana-dashboard.json returns series;
#  4. the catalog's leader and one more catalog replica are killed:
#     PygmyNoLeader and PygmyMajorityDown fire for the catalog, and only
#     for it.
#
#   .ci/prometheus.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

.ci/prometheus-tools.sh
prometheus=$root/target/tools/prometheus
promtool=$root/target/tools/promtool
api=http://127.0.0.1:19090/api/v1

echo "== promtool: the config, the rules and the rules' tests"
"$promtool" check config deploy/prometheus.yml
"$promtool" test rules deploy/alerts.test.yml

for port in 8010 8011 8012 8013 8014 8015 8016 19090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "prometheus.sh: something listens on 127.0.0.1:$port already; stop it first" >&2
    exit 1
  fi
done

echo "== building pygmy-server and pygmy-client"
cargo build --locked -q -p pygmy-server -p pygmy-client --bins
server=$root/target/debug/pygmy-server
client=$root/target/debug/pygmy-client

work=$(mktemp -d)
declare -A pids=()
cleanup() {
  status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    tail -n 20 "$work"/logs/*.log "$work/prometheus.log" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

nodes="frontend catalog-a order-a catalog-b order-b catalog-c order-c"
(cd "$work" && "$server" --print-token >/dev/null)
for node in $nodes; do
  (cd "$work" && exec "$server" --node "$node" >"$work/$node.out" 2>&1) &
  pids[$node]=$!
done
for node in $nodes; do
  for attempt in $(seq 1 150); do
    if "$server" --node "$node" --probe 2>/dev/null; then break; fi
    if [ "$attempt" -eq 150 ]; then echo "prometheus.sh: $node is not ready" >&2; exit 1; fi
    sleep 0.2
  done
done

echo "== prometheus with deploy/prometheus.yml"
"$prometheus" --config.file="$root/deploy/prometheus.yml" \
  --storage.tsdb.path="$work/tsdb" --web.listen-address=127.0.0.1:19090 \
  >"$work/prometheus.log" 2>&1 &
pids[prometheus]=$!

echo "== a load of 20 s, scraped"
(cd "$work" && "$client" --wait 10s load --duration 20s --concurrency 8 >"$work/load.out")

# The dashboard's and the rules' expressions, asked of Prometheus.
python3 - "$api" "$root/docs/grafana-dashboard.json" <<'PY'
import json, sys, time, urllib.parse, urllib.request

api, dashboard = sys.argv[1], sys.argv[2]

def get(path, **params):
    url = f"{api}/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    if body.get("status") != "success":
        sys.exit(f"prometheus.sh: {path} {params}: {body}")
    return body["data"]

targets = get("targets")["activeTargets"]
down = [(t["labels"]["job"], t["scrapeUrl"], t["lastError"]) for t in targets if t["health"] != "up"]
if len(targets) != 7 or down:
    sys.exit(f"prometheus.sh: {len(targets)} targets, down: {down}")
print(f"targets: {len(targets)} up")

rules = [r for g in get("rules")["groups"] for r in g["rules"]]
bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
if len(rules) != 7 or bad:
    sys.exit(f"prometheus.sh: {len(rules)} rules, failing: {bad}")
firing = [a for a in get("alerts")["alerts"] if a["state"] == "firing"]
if firing:
    sys.exit(f"prometheus.sh: alerts fire on a healthy store: {firing}")
print(f"rules: {len(rules)} evaluated, none firing")

def exprs(node):
    if isinstance(node, dict):
        if "expr" in node:
            yield node["expr"]
        for value in node.values():
            yield from exprs(value)
    elif isinstance(node, list):
        for value in node:
            yield from exprs(value)

empty = []
queries = list(exprs(json.load(open(dashboard))))
for expr in queries:
    result = get("query", query=expr)["result"]
    print(f"{len(result):3} series  {expr}")
    if not result:
        empty.append(expr)
if empty:
    sys.exit(f"prometheus.sh: dashboard queries with no series: {empty}")
print(f"dashboard: {len(queries)} queries, each with series")
PY

leader=$(python3 -c 'import json, urllib.request; print(json.load(urllib.request.urlopen("http://127.0.0.1:8011/health", timeout=5))["leader"])')
other=catalog-a
[ "$leader" != catalog-a ] || other=catalog-b
echo "== $leader (the catalog's leader) and $other killed: the catalog must be alerted on"
for node in "$leader" "$other"; do
  kill -9 "${pids[$node]}"
  wait "${pids[$node]}" 2>/dev/null || true
  unset "pids[$node]"
done
python3 - "$api" <<'PY'
import json, sys, time, urllib.request

api = sys.argv[1]
expected = {"PygmyNoLeader", "PygmyMajorityDown"}
deadline = time.monotonic() + 90
started = time.monotonic()
while True:
    with urllib.request.urlopen(f"{api}/alerts", timeout=10) as answer:
        alerts = json.load(answer)["data"]["alerts"]
    firing = [a["labels"] for a in alerts if a["state"] == "firing"]
    names = {labels["alertname"] for labels in firing}
    others = [labels for labels in firing if labels.get("job") != "catalog"]
    if others:
        sys.exit(f"prometheus.sh: alerts fire for what still serves: {others}")
    if expected <= names:
        print(f"{sorted(names)} fired for the catalog {time.monotonic() - started:.0f} s after the kills")
        break
    if time.monotonic() > deadline:
        sys.exit(f"prometheus.sh: {sorted(expected - names)} did not fire within 90 s: {alerts}")
    time.sleep(1)
PY
echo "prometheus.sh: ok"
