#!/usr/bin/env bash
# The task-suite baseline (BENCHMARKS.md): SmolLM2-135M alone, Qwen2.5-Coder-0.5B
# alone, and the fallback chain (SmolLM2 with one validation retry, then Qwen),
# each on the held-out split of every task, through the gateway.
#
#   scripts/tasks-baseline.sh                  # LIMIT=20 items per task
#   LIMIT=40 scripts/tasks-baseline.sh
#
# Engines and gateway listen on 127.0.0.1:18101/18102/18100 (config/tasks-bench.toml);
# ones already listening there are reused. Reports go to $OUT/<task>/report.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
LIMIT="${LIMIT:-20}"
# One request at a time, as the published numbers were measured (BENCHMARKS
# §4/§5; they predate the batched-decode fix of vendor/PATCHES.md, which
# makes concurrent answers equal to solo ones). On 2 cores a batch is not
# faster either.
CONCURRENCY="${CONCURRENCY:-1}"
MAX_TOKENS="${MAX_TOKENS:-128}"
SEED="${SEED:-1}"
OUT="${OUT:-$FLYWHEEL_CACHE/bench/tasks-baseline}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then build_release; fi
mkdir -p "$OUT"
trap 'stop_started' EXIT
start_task_bench "$OUT"

"$BIN/flywheel-tuner" tasks --out "$OUT/tasks" --seed "$SEED" --n 200
for task in extraction arithmetic instructions policy tool_call; do
  log "$task"
  "$BIN/flywheel-tuner" eval --dataset "$OUT/tasks/$task.heldout.jsonl" --grader "$OUT/tasks/$task.grader.json" \
    --gateway http://127.0.0.1:18100/v1 --limit "$LIMIT" --concurrency "$CONCURRENCY" --max-tokens "$MAX_TOKENS" \
    --config base=tasks-base --raw base --config qwen-0.5b=tasks-big --raw qwen-0.5b --config chain=tasks-chain \
    --out "$OUT/$task" ${EVAL_ARGS:-}
done
# One table: task, config, mean score, pass rate, cost/request, quality per $.
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
print("| task | config | mean score (95% CI) | pass rate | retries/req | fallbacks/req | cost/req (USD) | quality per $ |")
print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
for task in ["extraction", "arithmetic", "instructions", "policy", "tool_call"]:
    r = json.load(open(os.path.join(out, task, "report.json")))
    for c in r["configs"]:
        m, p = c["mean_score"], c["pass_rate"]
        q = c["quality_per_dollar"]
        print(f"| {task} | {c['config']} | {m['value']:.3f} ({m['low']:.3f}–{m['high']:.3f}) | {p['value']:.3f} | "
              f"{c['retries_per_request']:.2f} | {c['fallbacks_per_request']:.2f} | {c['cost_per_request_usd']:.8f} | "
              f"{'n/a' if q is None else f'{q:,.0f}'} |")
PY
