# Shared by the bench scripts (sourced, not run): install wrk when it is
# missing; start the default store (raft 3+3) from a binary with its data,
# logs and catalog file in a directory of the run's own, wait until it
# serves, and stop it.
#
#   ensure_wrk
#   start_store BINARY DIR BOOKS [RETENTION]   sets store_pid
#   stop_store

ensure_wrk() {
  if ! command -v wrk >/dev/null; then
    echo "installing wrk..."
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  fi
}

store_pid=

start_store() { # binary dir books [op_retention_s]
  local binary=$1 dir=$2 books=$3 retention=${4:-}
  mkdir -p "$dir"
  "$binary" --print-config \
    | sed "s/^op_retention_s = .*/op_retention_s = ${retention:-86400}/" \
    | sed "s|^log_dir = .*|log_dir = \"$dir/logs\"\ncatalog_file = \"$books\"|" \
    | sed "s|^data_dir = \"data/|data_dir = \"$dir/data/|" >"$dir/cluster.toml"
  (cd "$dir" && exec "$binary" --config cluster.toml >"$dir/server.log" 2>&1) &
  store_pid=$!
  for _ in $(seq 300); do
    curl -sf http://127.0.0.1:8010/health >/dev/null \
      && curl -sf http://127.0.0.1:8011/health >/dev/null \
      && curl -sf http://127.0.0.1:8012/health >/dev/null \
      && return 0
    sleep 0.1
  done
  echo "the store in $dir did not come up; see $dir/server.log" >&2
  return 1
}

stop_store() {
  if [ -n "$store_pid" ]; then
    kill "$store_pid" 2>/dev/null || true
    wait "$store_pid" 2>/dev/null || true
    store_pid=
  fi
}
