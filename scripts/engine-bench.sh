#!/usr/bin/env bash
# Decode/prefill speed of flywheel-engine (mistral.rs) in several configurations next to
# llama.cpp (llama-cpp-python 0.3.36, the same model's Q4_1 GGUF), 1 and 8 concurrent
# streams, short and long prompts, 48-token answers, in one run: the configurations and
# llama.cpp take turns for ROUNDS rounds, so the machine's drift falls on all of them, and
# the table reports medians with each configuration's ratio to llama.cpp. Each
# configuration's greedy answers to fixed prompts are printed beside the first one's.
#
#   scripts/engine-bench.sh                                   # defaults below
#   ENGINE_CONFIGS="f32=--isq none|q4k=--isq q4k" ROUNDS=3 scripts/engine-bench.sh
#   THREADS=1 ENGINE_ARGS="--max-seqs 8" SKIP_LLAMA=1 scripts/engine-bench.sh
#
# ENGINE_CONFIGS: `label=engine flags` separated by `|`; ENGINE_ARGS is added to every one.
# Flags that start with a path (`label=/tmp/old/flywheel-engine --isq q8_0`) run that
# engine binary instead of this build's, to compare two builds in one run.
# Prints one JSON line per measurement, then the Markdown table (engine/bench/table.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh
LLAMA_VENV="${LLAMA_VENV:-$FLYWHEEL_CACHE/venv-llamacpp}"
REQS="${REQS:-3}"
ROUNDS="${ROUNDS:-2}"
MAX_TOKENS="${MAX_TOKENS:-48}"
THREADS="${THREADS:-2}"
PROMPTS="${PROMPTS:-short long}"
STREAMS="${STREAMS:-1 8}"
ENGINE_CONFIGS="${ENGINE_CONFIGS:-F32=--isq none|ISQ Q8_0=--isq q8_0}"
HF="$FLYWHEEL_CACHE/models/smollm2/hf"
GGUF="$FLYWHEEL_CACHE/models/smollm2/model.gguf"
OUT=$(mktemp /tmp/engine-bench.XXXXXX.jsonl)
[ -f "$HF/config.json" ] || scripts/fetch-model.sh smollm2 >/dev/null

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  build_engine
fi

# One engine configuration: start it, check its answers, measure every load, stop it.
bench_engine() {
  local label=$1 args=$2 bin=$ENGINE log
  if [[ $args == /* ]]; then
    bin=${args%% *}
    args=${args#"$bin"}
  fi
  log=$(mktemp /tmp/engine-bench.XXXXXX.log)
  log "[$label] starting $bin (RAYON_NUM_THREADS=$THREADS $args ${ENGINE_ARGS:-}); log $log"
  # shellcheck disable=SC2086
  RAYON_NUM_THREADS=$THREADS start_listening "$log" "$bin" serve --model "$HF" --name base $args ${ENGINE_ARGS:-}
  trap 'kill $STARTED_PID 2>/dev/null || true' EXIT
  python3 "$ROOT/engine/bench/answers.py" --url "http://$ADDR" --model base --label "mistral.rs $label" | tee -a "$OUT"
  for prompt in $PROMPTS; do
    for c in $STREAMS; do
      python3 "$ROOT/engine/bench/stream_bench.py" --url "http://$ADDR" --model base \
        --concurrency "$c" --requests-per-stream "$REQS" --max-tokens "$MAX_TOKENS" --prompt "$prompt" \
        --label "mistral.rs $label" | tee -a "$OUT"
    done
  done
  kill "$STARTED_PID"; wait "$STARTED_PID" 2>/dev/null || true
  trap - EXIT
}

bench_llama() {
  for prompt in $PROMPTS; do
    for c in $STREAMS; do
      (cd "$ROOT/engine/bench" && "$LLAMA_VENV/bin/python" llama_bench.py --gguf "$GGUF" --threads "$THREADS" \
        --concurrency "$c" --requests-per-stream "$REQS" --max-tokens "$MAX_TOKENS" --prompt "$prompt") | tee -a "$OUT"
    done
  done
}

install_llama() {
  # Built with explicit kernels, not -march=native: a native build of 0.3.36
  # crashed at the first token on this kind of VM (general protection fault
  # in libggml-cpu's AVX-512/AMX path). AVX2 + FMA + F16C runs on every
  # machine of this kind; --no-cache-dir keeps pip from reusing a native
  # wheel it built before. The marker file records the flags the venv has.
  LLAMA_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  if ! "$LLAMA_VENV/bin/python" -c 'import llama_cpp' 2>/dev/null \
     || [ "$(cat "$LLAMA_VENV/.ggml-flags" 2>/dev/null)" != "$LLAMA_FLAGS" ]; then
    log "installing llama-cpp-python 0.3.36 into $LLAMA_VENV (compiles llama.cpp, AVX2 kernels: several minutes)"
    rm -rf "$LLAMA_VENV"
    python3 -m venv "$LLAMA_VENV"
    CMAKE_ARGS="$LLAMA_FLAGS" "$LLAMA_VENV/bin/pip" install --quiet --disable-pip-version-check \
      --no-cache-dir --no-binary llama-cpp-python llama-cpp-python==0.3.36
    echo "$LLAMA_FLAGS" >"$LLAMA_VENV/.ggml-flags"
  fi
}

[ "${SKIP_LLAMA:-0}" = 1 ] || install_llama
IFS='|' read -r -a CONFIGS <<<"$ENGINE_CONFIGS"
for round in $(seq "$ROUNDS"); do
  log "round $round of $ROUNDS"
  if [ "${SKIP_MISTRALRS:-0}" != 1 ]; then
    for config in "${CONFIGS[@]}"; do
      bench_engine "${config%%=*}" "${config#*=}"
    done
  fi
  if [ "${SKIP_LLAMA:-0}" != 1 ]; then
    log "[llama.cpp] $THREADS threads, $GGUF"
    bench_llama
  fi
done
log "results ($OUT; medians over $ROUNDS rounds)"
python3 "$ROOT/engine/bench/table.py" <"$OUT"
