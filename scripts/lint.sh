#!/usr/bin/env bash
# Style that CI enforces: rustfmt (nightly, for the import-grouping options
# of rustfmt.toml) and clippy with every warning an error, on every crate
# but the engine, whose mistral.rs dependency would add ~15 minutes of
# checking on a fresh machine (scripts/engine-test.sh fails instead when
# the engine's own code builds with any warning).
#
#   scripts/lint.sh          check
#   scripts/lint.sh --fix    format in place first
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ "${1:-}" = --fix ]; then cargo +nightly fmt --all; fi
log "cargo fmt --check"
cargo +nightly fmt --all --check
# pingora's zlib-ng build script needs cmake, even to check.
command -v cmake >/dev/null || bash scripts/services.sh install
log "cargo clippy --all-targets -D warnings"
cargo clippy $(locked_flag) --all-targets -- -D warnings
