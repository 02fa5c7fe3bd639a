#!/usr/bin/env bash
# Benchmark: how the replicas' storage grows with buys, with op records kept
# for a short window against the default day, side by side.
#
# Builds pygmy-server and pygmy-client (release), then for each retention
# (RETENTION seconds, then the default 86400) runs the default store (raft
# 3+3) with 10^9 copies of each book, drives BUYS buys (64 clients, buys
# only) and prints, for catalog-a and order-a: the database file (with its
# WAL), the bytes in use in it (pages minus free pages), the op records
# kept, the rows of live data (books, orders) and the snapshot file.
#
# Usage: bench/storage.sh [BUYS] [RETENTION]   (default 100000, 60; with
# RETENTION 86400, only the default runs)
# Needs python3 (to read the SQLite files).
set -euo pipefail
cd "$(dirname "$0")/.."
buys=${1:-100000}
retention=${2:-60}

work=$(mktemp -d)
. bench/lib.sh
cleanup() {
  stop_store
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building (release)"
cargo build --release --locked -q -p pygmy-server -p pygmy-client
server=$PWD/target/release/pygmy-server
client=$PWD/target/release/pygmy-client

# The seed's books, with a stock that never runs out.
sed 's/^count = 100$/count = 1000000000/' examples/books.toml >"$work/books.toml"

measure() { # data dir label
  python3 - "$1" "$2" <<'EOF'
import os, sqlite3, sys
data, label = sys.argv[1], sys.argv[2]
for node, file, live in (("catalog-a", "catalog.db", "books"), ("order-a", "orders.db", "orders")):
    path = os.path.join(data, node, file)
    size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    db = sqlite3.connect(path)
    pages, free, page = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size"))
    ops = db.execute("SELECT COUNT(*) FROM journal_ops").fetchone()[0]
    rows = db.execute(f"SELECT COUNT(*) FROM {live}").fetchone()[0]
    snaps = path + ".snapshots"
    snap = sum(os.path.getsize(os.path.join(snaps, f)) for f in os.listdir(snaps)) if os.path.isdir(snaps) else 0
    print(f"{label:>16} {node:<9} file {size/1e6:8.1f} MB  in use {(pages-free)*page/1e6:8.1f} MB  "
          f"op records {ops:>8}  {live} {rows:>8}  snapshot {snap/1e6:7.1f} MB")
EOF
}

# RETENTION 86400 runs the default alone.
for keep in $(printf '%s\n' "$retention" 86400 | awk '!seen[$0]++'); do
  dir="$work/run-$keep"
  start_store "$server" "$dir" "$work/books.toml" "$keep"
  echo "== op_retention_s = $keep: $buys buys"
  "$client" load --requests "$buys" --concurrency 64 --mix buy=100 | grep -E "requests in|^buy"
  sleep 2
  stop_store
  measure "$dir/data" "retention ${keep}s"
done
