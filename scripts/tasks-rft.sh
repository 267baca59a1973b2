#!/usr/bin/env bash
# The RFT benchmark of one task (BENCHMARKS.md): GRPO with LoRA on SmolLM2-135M
# (flywheel-tuner train), then the tuned model (its best merged checkpoint,
# served by a third engine) evaluated through the gateway next to the base
# model and the fallback chain.
#
#   TASK=policy scripts/tasks-rft.sh
#   TASK=instructions STEPS=40 PROMPTS=1 TRAIN_TOKENS=64 scripts/tasks-rft.sh
#   SKIP_TRAIN=1 TASK=...       # evaluate an existing $OUT/rft-$TASK run
#   SKIP_EVAL=1 TASK=...        # train only (no engines needed)
#   RESUME=1 STEPS=60 TASK=...  # continue a run from its checkpoint to STEPS in all
#   SEED=2 TASK=...             # another seed (sampling and LoRA init); RUN defaults to rft-$TASK-seed2
#
# Checkpoint selection and the final numbers use different held-out items:
# the trainer scores the first SELECT_ITEMS held-out items greedily every
# EVAL_EVERY steps and exports the best step; the gateway eval then uses the
# held-out items after those (LIMIT of them), so the reported gain is not
# the maximum of several noisy measurements on the same items.
#
# One request at a time (see scripts/tasks-baseline.sh for why). The
# engines and gateway of scripts/tasks-baseline.sh are reused when up.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
TASK="${TASK:?TASK=extraction|arithmetic|instructions|policy|tool_call}"
STEPS="${STEPS:-30}"; PROMPTS="${PROMPTS:-1}"; GENERATIONS="${GENERATIONS:-8}"; LR="${LR:-5e-5}"
TRAIN_TOKENS="${TRAIN_TOKENS:-64}"; EVAL_EVERY="${EVAL_EVERY:-10}"; SELECT_ITEMS="${SELECT_ITEMS:-20}"
LIMIT="${LIMIT:-20}"; MAX_TOKENS="${MAX_TOKENS:-96}"; SEED="${SEED:-1}"
OUT="${OUT:-$FLYWHEEL_CACHE/bench/tasks-baseline}"
SUITE="$OUT/tasks"
[ -f "$SUITE/$TASK.grader.json" ] || "$BIN/flywheel-tuner" tasks --out "$SUITE" --seed 1 --n 200
# Seed 1 keeps the directory name the BENCHMARKS runs used.
if [ "$SEED" = 1 ]; then RUN="${RUN:-$OUT/rft-$TASK}"; else RUN="${RUN:-$OUT/rft-$TASK-seed$SEED}"; fi
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  if [ "${RESUME:-0}" = 1 ]; then TRAIN_ARGS="--resume ${TRAIN_ARGS:-}"; else rm -rf "$RUN"; fi
  "$BIN/flywheel-tuner" train --model "$(fetched_model smollm2)" \
    --train "$SUITE/$TASK.train.jsonl" --heldout "$SUITE/$TASK.heldout.jsonl" --grader "$SUITE/$TASK.grader.json" \
    --out "$RUN" --steps "$STEPS" --prompts-per-step "$PROMPTS" --generations "$GENERATIONS" \
    --max-new-tokens "$TRAIN_TOKENS" --lr "$LR" --eval-every "$EVAL_EVERY" --eval-items "$SELECT_ITEMS" \
    --eval-max-tokens "$TRAIN_TOKENS" --seed "$SEED" ${TRAIN_ARGS:-}
fi
[ "${SKIP_EVAL:-0}" = 1 ] && exit 0
trap 'stop_started' EXIT
start_task_bench "$OUT"
start_listening "$RUN/engine.log" "$ENGINE" serve --model "$RUN/best/merged" --name rft --listen 127.0.0.1:18103
STARTED+=("$STARTED_PID")
tail -n +"$((SELECT_ITEMS + 1))" "$SUITE/$TASK.heldout.jsonl" >"$RUN/final.jsonl"
"$BIN/flywheel-tuner" eval --dataset "$RUN/final.jsonl" --grader "$SUITE/$TASK.grader.json" \
  --gateway http://127.0.0.1:18100/v1 --limit "$LIMIT" --concurrency 1 --max-tokens "$MAX_TOKENS" \
  --config base=tasks-base --raw base --config rft=tasks-rft --raw rft --config chain=tasks-chain \
  --out "$RUN/eval"
