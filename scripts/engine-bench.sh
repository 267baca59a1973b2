#!/usr/bin/env bash
# Decode/prefill speed of flywheel-engine (mistral.rs, F32 SmolLM2 dir) next to llama.cpp
# (llama-cpp-python 0.3.36, same Q4_1 GGUF), 1 and 8 concurrent streams, 48-token answers.
#
#   scripts/engine-bench.sh                 # defaults below
#   THREADS=2 REQS=3 ENGINE_ARGS="--max-seqs 32" scripts/engine-bench.sh   # batched (see BENCHMARKS §3)
#
# Prints one JSON line per measurement. Engine flags come from ENGINE_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh
LLAMA_VENV="${LLAMA_VENV:-$FLYWHEEL_CACHE/venv-llamacpp}"
REQS="${REQS:-3}"
MAX_TOKENS="${MAX_TOKENS:-48}"
THREADS="${THREADS:-2}"
HF="$FLYWHEEL_CACHE/models/smollm2/hf"
GGUF="$FLYWHEEL_CACHE/models/smollm2/model.gguf"
[ -f "$HF/config.json" ] || scripts/fetch-model.sh smollm2 >/dev/null

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  build_engine
fi

if [ "${SKIP_MISTRALRS:-0}" != 1 ]; then
  LOG=$(mktemp /tmp/engine-bench.XXXXXX.log)
  log "starting flywheel-engine (RAYON_NUM_THREADS=$THREADS ${ENGINE_ARGS:-}); log $LOG"
  RAYON_NUM_THREADS=$THREADS start_listening "$LOG" "$ENGINE" serve --model "$HF" --name base ${ENGINE_ARGS:-}
  trap 'kill $STARTED_PID 2>/dev/null || true' EXIT
  for prompt in short long; do
    for c in 1 8; do
      python3 "$ROOT/engine/bench/stream_bench.py" --url "http://$ADDR" --model base \
        --concurrency "$c" --requests-per-stream "$REQS" --max-tokens "$MAX_TOKENS" --prompt "$prompt" \
        --label "mistral.rs F32 RAYON_NUM_THREADS=$THREADS ${ENGINE_ARGS:-}"
    done
  done
  kill "$STARTED_PID"; wait "$STARTED_PID" 2>/dev/null || true
  trap - EXIT
fi

if [ "${SKIP_LLAMA:-0}" != 1 ]; then
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
  for prompt in short long; do
    for c in 1 8; do
      (cd "$ROOT/engine/bench" && "$LLAMA_VENV/bin/python" llama_bench.py --gguf "$GGUF" --threads "$THREADS" \
        --concurrency "$c" --requests-per-stream "$REQS" --max-tokens "$MAX_TOKENS" --prompt "$prompt")
    done
  done
fi
