#!/usr/bin/env bash
# GRPO step time, flywheel-trainer vs TRL's GRPOTrainer, in one run on the same
# model directory, prompt, reward and sizes (1 prompt x 8 completions <= 32 tokens,
# LoRA r=16 on all linear layers, 2 threads). Prints both JSON lines and the ratio.
#
#   STEPS=6 scripts/trainer-vs-trl.sh
#
# TRL lives in its own virtualenv ($FLYWHEEL_CACHE/venv-trl: torch, transformers,
# trl, peft from PyPI, several GB), created on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
STEPS="${STEPS:-6}"
MODEL="${MODEL:-$FLYWHEEL_CACHE/models/smollm2/hf}"
TRL_VENV="${TRL_VENV:-$FLYWHEEL_CACHE/venv-trl}"
[ -f "$MODEL/config.json" ] || MODEL=$(scripts/fetch-model.sh smollm2 | tail -1)
if [ ! -x "$TRL_VENV/bin/python" ] || ! "$TRL_VENV/bin/python" -c 'import trl, peft' 2>/dev/null; then
  log "creating $TRL_VENV (torch, transformers, trl, peft)"
  python3 -m venv "$TRL_VENV"
  "$TRL_VENV/bin/pip" install --quiet --disable-pip-version-check torch transformers trl peft datasets accelerate
fi
build_release
ours=$(RAYON_NUM_THREADS=2 "$CARGO_TARGET_DIR/release/examples/step_time" "$STEPS" "$MODEL" | tail -1)
trl=$(OMP_NUM_THREADS=2 "$TRL_VENV/bin/python" trainer/bench/trl_step_time.py "$MODEL" "$STEPS" 2>/dev/null | tail -1)
echo "$ours"
echo "$trl"
python3 -c "
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f'flywheel {a[\"mean_s_after_first\"]:.2f} s/step, TRL {b[\"mean_s_after_first\"]:.2f} s/step: '
      f'flywheel takes {a[\"mean_s_after_first\"] / b[\"mean_s_after_first\"]:.2f}x the time of TRL')
" "$ours" "$trl"
