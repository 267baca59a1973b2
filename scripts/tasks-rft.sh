#!/usr/bin/env bash
# The RFT benchmark of one task (BENCHMARKS.md): GRPO with LoRA on SmolLM2-135M
# (flywheel-tuner train), then the tuned model (its best merged checkpoint,
# served by a third engine) evaluated through the gateway on the same held-out
# items as scripts/tasks-baseline.sh, next to the base and the chain.
#
#   TASK=extraction scripts/tasks-rft.sh
#   TASK=policy STEPS=30 LR=5e-5 LIMIT=10 scripts/tasks-rft.sh
#   SKIP_TRAIN=1 ...            # evaluate an existing $OUT/rft-$TASK run
#
# One request at a time (see scripts/tasks-baseline.sh for why).
# Needs the engines and gateway of scripts/tasks-baseline.sh (reused when up).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
TASK="${TASK:?TASK=extraction|arithmetic|instructions|policy|tool_call}"
STEPS="${STEPS:-30}"; LR="${LR:-5e-5}"; LIMIT="${LIMIT:-10}"; MAX_TOKENS="${MAX_TOKENS:-96}"
OUT="${OUT:-$FLYWHEEL_CACHE/bench/tasks-baseline}"
ENGINE="${FLYWHEEL_ENGINE_BIN:-$FLYWHEEL_CACHE/target-engine/release/flywheel-engine}"
SUITE="$OUT/tasks"
[ -f "$SUITE/$TASK.grader.json" ] || "$BIN/flywheel-tuner" tasks --out "$SUITE" --seed 1 --n 200
RUN="$OUT/rft-$TASK"
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  rm -rf "$RUN"
  "$BIN/flywheel-tuner" train --model "$FLYWHEEL_CACHE/models/smollm2/hf" \
    --train "$SUITE/$TASK.train.jsonl" --heldout "$SUITE/$TASK.heldout.jsonl" --grader "$SUITE/$TASK.grader.json" \
    --out "$RUN" --steps "$STEPS" --generations 8 --max-new-tokens 64 --lr "$LR" \
    --eval-every 10 --eval-items 20 --eval-max-tokens 64 --seed 1
fi
start_listening "$RUN/engine.log" "$ENGINE" serve --model "$RUN/best/merged" --name rft --listen 127.0.0.1:18103
trap 'kill $STARTED_PID 2>/dev/null || true' EXIT
"$BIN/flywheel-tuner" eval --dataset "$SUITE/$TASK.heldout.jsonl" --grader "$SUITE/$TASK.grader.json" \
  --gateway http://127.0.0.1:18100/v1 --limit "$LIMIT" --concurrency 1 --max-tokens "$MAX_TOKENS" \
  --config base=tasks-base --raw base --config rft=tasks-rft --raw rft --config chain=tasks-chain \
  --out "$RUN/eval"
