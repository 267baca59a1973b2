#!/usr/bin/env bash
# The test command: builds everything (release) and runs every test,
# end-to-end tests included. Needs only what this script installs itself.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_python
build_release
log "running tests"
cargo test --release --locked --workspace -- --test-threads "${TEST_THREADS:-4}"
