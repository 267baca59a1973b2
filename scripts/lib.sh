# Shared settings of the project's scripts. Caches live outside the clone so
# that repeated runs (and CI on the same machine) reuse builds and downloads.
export FLYWHEEL_CACHE="${FLYWHEEL_CACHE:-/var/tmp/flywheel}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FLYWHEEL_CACHE/target}"
export FLYWHEEL_VENV="${FLYWHEEL_VENV:-$FLYWHEEL_CACHE/venv}"
# The engine binary the benchmark scripts start (scripts/engine-test.sh builds it).
ENGINE="${FLYWHEEL_ENGINE_BIN:-${ENGINE_TARGET_DIR:-$FLYWHEEL_CACHE/target-engine}/release/flywheel-engine}"
BIN="$CARGO_TARGET_DIR/release"
mkdir -p "$FLYWHEEL_CACHE"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# A virtualenv with the Python packages the tests and benchmarks use.
ensure_python() {
  # openai: the SDK compatibility tests; selenium: the dashboards' browser
  # test (dashboards/tests/browser.py, driving Debian's chromium-driver).
  if [ ! -x "$FLYWHEEL_VENV/bin/python" ] || ! "$FLYWHEEL_VENV/bin/python" -c 'import openai, selenium' 2>/dev/null; then
    log "creating $FLYWHEEL_VENV (openai SDK, selenium)"
    python3 -m venv "$FLYWHEEL_VENV"
    "$FLYWHEEL_VENV/bin/pip" install --quiet --disable-pip-version-check 'openai>=1.40,<3' 'selenium>=4.10,<5'
  fi
  export FLYWHEEL_PYTHON="$FLYWHEEL_VENV/bin/python"
}

# Every script builds the same package and target selection, so that cargo's
# feature unification (which depends on what is selected) gives one set of
# dependency artifacts, built once: a warm cache stays warm whichever script
# runs next. `cargo test --release` selects the same units, so the tests
# reuse them too.
#   build_release: the workspace's default members (everything but the
#                  engine), every target (bins, examples, tests), release.
#   build_engine:  the engine (mistral.rs) with its tests, in its own target
#                  dir ($ENGINE_TARGET_DIR), so the other crates never wait
#                  for its ~30 min first build.
ENGINE_TARGET_DIR="${ENGINE_TARGET_DIR:-$FLYWHEEL_CACHE/target-engine}"
locked_flag() {
  # --locked while Cargo.lock is current; otherwise let cargo update it
  # rather than fail (a lockfile edit in a working tree).
  if cargo metadata --locked --format-version 1 >/dev/null 2>&1; then echo --locked; fi
}
build_release() {
  # pingora's zlib-ng needs cmake; services.sh installs the system packages.
  command -v cmake >/dev/null || bash scripts/services.sh install
  log "building the workspace (release, all targets, target dir $CARGO_TARGET_DIR)"
  cargo build --release $(locked_flag) --all-targets
}
# The engine's own code must build without warnings (clippy would re-check
# all of mistral.rs, ~15 minutes on a fresh machine): cargo replays the
# warnings of cached crates, so this holds on warm builds too.
# candle picks its GGML (quantized) and vector kernels at compile time
# (`#[cfg(target_feature = "avx2")]`), and the default x86-64 target has only
# SSE2: without these flags `--isq` matmuls run scalar fallbacks (6-9 tok/s
# here, BENCHMARKS §3). Set only where this CPU has the features, so the
# binary runs where it was built. The gemm crate behind F32 matmuls detects
# AVX2 at run time either way. Changing them rebuilds the engine's target dir.
engine_rustflags() {
  if [ "$(uname -m)" = x86_64 ] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo \
     && grep -qw f16c /proc/cpuinfo; then
    echo "-C target-feature=+avx,+avx2,+fma,+f16c"
  fi
}
ENGINE_RUSTFLAGS="${ENGINE_RUSTFLAGS-$(engine_rustflags)}"
build_engine() {
  log "building flywheel-engine (release, all targets, target dir $ENGINE_TARGET_DIR, RUSTFLAGS '$ENGINE_RUSTFLAGS')"
  local out; out=$(mktemp)
  RUSTFLAGS="$ENGINE_RUSTFLAGS" CARGO_TARGET_DIR="$ENGINE_TARGET_DIR" cargo build --release $(locked_flag) -p flywheel-engine --all-targets 2>&1 | tee "$out" >&2
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then rm -f "$out"; return "$rc"; fi
  if grep -q '^warning: `flywheel-engine`' "$out"; then
    rm -f "$out"; echo "flywheel-engine builds with warnings (see above)" >&2; return 1
  fi
  rm -f "$out"
}

# Starts a binary that prints `listening on ADDR` first; sets $ADDR.
# Usage: start_listening LOGFILE CMD ARGS...
start_listening() {
  local logfile=$1; shift
  local fifo; fifo=$(mktemp -u); mkfifo "$fifo"
  "$@" >"$fifo" 2>>"$logfile" &
  STARTED_PID=$!
  exec 3<"$fifo"; rm -f "$fifo"
  read -r -t 30 line <&3 || { echo "failed to start: $*" >&2; return 1; }
  ADDR=${line#listening on }
  # Keep draining stdout into the log.
  cat <&3 >>"$logfile" &
  exec 3<&-
}

# Processes started by start_task_bench (stopped by stop_started).
STARTED=()
stop_started() { for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done; }
listening() { curl -sf "http://$1/health" >/dev/null 2>&1 || curl -sf "http://$1/v1/models" >/dev/null 2>&1; }

# The task-suite bench of config/tasks-bench.toml: SmolLM2 (127.0.0.1:18101)
# and Qwen2.5-Coder-0.5B (18102) engines and the gateway (18100). Ones
# already listening are reused; models are fetched the first time.
# Usage: start_task_bench LOGDIR
start_task_bench() {
  local logs=$1
  [ -x "$ENGINE" ] || { echo "no engine at $ENGINE: run scripts/engine-test.sh (it builds it)" >&2; return 1; }
  mkdir -p "$logs"
  if ! listening 127.0.0.1:18101; then
    start_listening "$logs/engine-small.log" "$ENGINE" serve --model "$(fetched_model smollm2)" --name base --listen 127.0.0.1:18101
    STARTED+=("$STARTED_PID")
  fi
  if ! listening 127.0.0.1:18102; then
    start_listening "$logs/engine-big.log" "$ENGINE" serve --model "$(fetched_model qwen2.5-coder-0.5b)" --name qwen --listen 127.0.0.1:18102
    STARTED+=("$STARTED_PID")
  fi
  if ! listening 127.0.0.1:18100; then
    "$BIN/flywheel-gateway" -c config/tasks-bench.toml >"$logs/gateway.log" 2>&1 &
    STARTED+=("$!")
    for _ in $(seq 50); do listening 127.0.0.1:18100 && break; sleep 0.2; done
  fi
}

# The fetched model's HF directory (fetches it the first time).
fetched_model() {
  local dir="$FLYWHEEL_CACHE/models/$1/hf"
  if [ -f "$dir/config.json" ]; then echo "$dir"; else scripts/fetch-model.sh "$1" | tail -1; fi
}
