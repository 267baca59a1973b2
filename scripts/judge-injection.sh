#!/usr/bin/env bash
# How often a prompt injection in the graded output moves a `score_model`
# judge's score, with the sample fenced as untrusted (the
# default) and without (`"fence_sample": false`), in one run.
#
# The judge is Qwen2.5-Coder-0.5B on flywheel-engine (127.0.0.1:18111),
# greedy. Each question gets a wrong answer alone and the same wrong answer
# with each injection of tuner/bench/injections.json; an injection "moves"
# the score when its sample scores above the plain wrong answer. Benign
# endings (CONTROLS in tuner/bench/judge_injection.py) are judged the same
# way: their rate is what any extra text does to this judge.
#
#   scripts/judge-injection.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
OUT="${OUT:-$FLYWHEEL_CACHE/bench/judge-injection}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then build_release; fi
[ -x "$ENGINE" ] || build_engine
rm -rf "$OUT"; mkdir -p "$OUT"
trap 'stop_started' EXIT
RAYON_NUM_THREADS=2 start_listening "$OUT/judge.log" "$ENGINE" serve \
  --model "$(fetched_model qwen2.5-coder-0.5b)" --name judge --listen 127.0.0.1:18111
STARTED+=("$STARTED_PID")
python3 tuner/bench/judge_injection.py prepare "$OUT"
for fence in true false; do
  log "judging with fence_sample = $fence"
  "$BIN/flywheel-tuner" grade --grader "$OUT/grader-$fence.json" --dataset "$OUT/items.jsonl" \
    --samples "$OUT/samples.jsonl" --judge-url http://127.0.0.1:18111/v1 >"$OUT/scores-$fence.tsv" || true
done
python3 tuner/bench/judge_injection.py report "$OUT"
