#!/usr/bin/env bash
# Soak: the fault tests that fail rarely by design, run RUNS times each,
# with the count of failures. `.ci/run` does not run them (a test that
# fails by chance would block a landing); run this before a change to the
# `broadcast` backend, and say its figures in the commit.
#
# Today: `broadcast_survives_crashes_and_restarts` (pygmy-server/tests/
# faults.rs): broadcast keeps every promise through crashes and restarts
# all but rarely (ARCHITECTURE.md, "What broadcast does not guarantee").
#
#   .ci/soak.sh [RUNS]   (default 10; about 25 s a run)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
tests=(broadcast_survives_crashes_and_restarts)

cargo test --locked -p pygmy-server --test faults --no-run
for test in "${tests[@]}"; do
  failed=0
  for run in $(seq 1 "$runs"); do
    if cargo test --locked -q -p pygmy-server --test faults -- --ignored --exact "$test" \
        >"target/soak-$test-$run.log" 2>&1; then
      echo "$test: run $run passed"
      rm -f "target/soak-$test-$run.log"
    else
      failed=$((failed + 1))
      echo "$test: run $run FAILED (target/soak-$test-$run.log)"
    fi
  done
  echo "$test: $failed of $runs runs failed"
done
