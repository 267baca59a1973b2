# Shared settings of the project's scripts. Caches live outside the clone so
# that repeated runs (and CI on the same machine) reuse builds and downloads.
export FLYWHEEL_CACHE="${FLYWHEEL_CACHE:-/var/tmp/flywheel}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FLYWHEEL_CACHE/target}"
export FLYWHEEL_VENV="${FLYWHEEL_VENV:-$FLYWHEEL_CACHE/venv}"
BIN="$CARGO_TARGET_DIR/release"
mkdir -p "$FLYWHEEL_CACHE"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# A virtualenv with the Python packages the tests and benchmarks use.
ensure_python() {
  if [ ! -x "$FLYWHEEL_VENV/bin/python" ] || ! "$FLYWHEEL_VENV/bin/python" -c 'import openai' 2>/dev/null; then
    log "creating $FLYWHEEL_VENV (openai SDK)"
    python3 -m venv "$FLYWHEEL_VENV"
    "$FLYWHEEL_VENV/bin/pip" install --quiet --disable-pip-version-check 'openai>=1.40,<3'
  fi
  export FLYWHEEL_PYTHON="$FLYWHEEL_VENV/bin/python"
}

# Usage: build_release [CARGO ARGS]   (default: every binary of the default
# members). Scripts build the same selection so that cargo's feature
# unification gives one set of dependency artifacts, built once.
build_release() {
  # pingora's zlib-ng needs cmake; services.sh installs the system packages.
  command -v cmake >/dev/null || bash scripts/services.sh install
  log "building (release, target dir $CARGO_TARGET_DIR)"
  if [ $# -eq 0 ]; then set -- --bins; fi
  cargo build --release --locked "$@"
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
