#!/usr/bin/env bash
# Task-suite quality of SmolLM2 served with `--isq none` and then `--isq q8_0`
# (BENCHMARKS §3): the gateway of config/tasks-bench.toml, one engine per mode on
# 127.0.0.1:18101, the held-out items of every task (seed 1, LIMIT per task),
# greedy, raw answers graded as in the task-suite baseline. Prints one line per
# mode and task: mean score, its 95% interval, pass rate.
#
#   scripts/isq-quality.sh          # LIMIT=20
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
LIMIT="${LIMIT:-20}"
OUT="${OUT:-$FLYWHEEL_CACHE/bench/isq-quality}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then build_release; fi
[ -x "$ENGINE" ] || build_engine
rm -rf "$OUT"; mkdir -p "$OUT"
trap 'stop_started' EXIT
"$BIN/flywheel-tuner" tasks --out "$OUT/tasks" --seed 1 --n 200 >/dev/null
"$BIN/flywheel-gateway" -c config/tasks-bench.toml >"$OUT/gateway.log" 2>&1 &
STARTED+=("$!")
for mode in none q8_0; do
  RAYON_NUM_THREADS=2 start_listening "$OUT/engine-$mode.log" "$ENGINE" serve \
    --model "$(fetched_model smollm2)" --name base --listen 127.0.0.1:18101 --isq "$mode"
  for task in extraction arithmetic instructions policy tool_call; do
    log "$mode: $task"
    "$BIN/flywheel-tuner" eval --dataset "$OUT/tasks/$task.heldout.jsonl" --grader "$OUT/tasks/$task.grader.json" \
      --gateway http://127.0.0.1:18100/v1 --limit "$LIMIT" --concurrency 4 --max-tokens 128 \
      --config base=tasks-base --raw base --out "$OUT/$mode/$task" >"$OUT/$mode-$task.log" 2>&1
    python3 - "$OUT/$mode/$task/report.json" "$mode" "$task" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["configs"][0]
m = c["mean_score"]
print(f"{sys.argv[2]} {sys.argv[3]}: mean {m['value']:.3f} ({m['low']:.3f}-{m['high']:.3f}), pass rate {c['pass_rate']['value']:.3f}")
PY
  done
  kill "$STARTED_PID"; wait "$STARTED_PID" 2>/dev/null || true
done
