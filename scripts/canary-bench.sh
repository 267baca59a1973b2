#!/usr/bin/env bash
# Decision latency of a canary rollback after a critical regression starts:
# the real gateway (capture into a private ClickHouse, weights from a
# private Redis), two mock providers and `flywheel-canary run`; at T0 the
# candidate's provider starts answering 500s; measured T0 → candidate
# weight 0 in Redis, per controller interval and live step
# (tests/examples/canary_rollback_bench.rs).
#
#   scripts/canary-bench.sh [--intervals 1,5,10] [--steps 1,5,25] [--reps 2]
#                           [--rate 100] [--warmup-secs 10] [--settle-ms 2000]
#
# Progress on stderr; the table (markdown) on stdout and in
# $FLYWHEEL_CACHE/bench/canary-rollback/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
OUT="$FLYWHEEL_CACHE/bench/canary-rollback"; mkdir -p "$OUT"
# Only what the benchmark runs: the three binaries and the example.
log "building flywheel-gateway, flywheel-mock, flywheel-canary and the benchmark (release)"
cargo build --release $(locked_flag) -p flywheel-gateway -p flywheel-loadtest -p flywheel-canary-controller --bins
cargo build --release $(locked_flag) -p flywheel-tests --example canary_rollback_bench
# The private services' data and the processes' scratch dirs go under
# $OUT/tmp (ClickHouse writes GBs of logs in a long run), removed at exit.
export TMPDIR="$OUT/tmp"; rm -rf "$TMPDIR"; mkdir -p "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT
log "running (private ClickHouse and Redis on free ports)"
CARGO_MANIFEST_DIR="$PWD/tests" "$BIN/examples/canary_rollback_bench" "$@" | tee "$OUT/results.md"
