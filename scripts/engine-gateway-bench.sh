#!/usr/bin/env bash
# Throughput of the engine through the gateway vs direct, in the same run:
# 8 concurrent streams (closed loop, 48-token answers), alternating direct /
# gateway twice. Target: gateway ≥ 0.98 × direct.
#
#   scripts/engine-gateway-bench.sh        (CONCURRENCY=8 REQS=3 ROUNDS=2 ENGINE_THREADS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ENGINE="${ENGINE_TARGET_DIR:-$FLYWHEEL_CACHE/target-engine}/release/flywheel-engine"
[ -x "$ENGINE" ] || { echo "build the engine first: scripts/engine-test.sh" >&2; exit 1; }
HF=$(scripts/fetch-model.sh smollm2 | tail -1)
CONCURRENCY=${CONCURRENCY:-8}; REQS=${REQS:-3}; ROUNDS=${ROUNDS:-2}
OUT="$FLYWHEEL_CACHE/bench/engine-gateway"; rm -rf "$OUT"; mkdir -p "$OUT"
build_release
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
RAYON_NUM_THREADS=${ENGINE_THREADS:-2} start_listening "$OUT/engine.log" "$ENGINE" serve --model "$HF" --name base
PIDS+=("$STARTED_PID"); ENGINE_ADDR=$ADDR
cat >"$OUT/gateway.toml" <<TOML
[auth]
enabled = false
[providers.engine]
base_url = "http://engine/v1"
replicas = ["$ENGINE_ADDR"]
[[routes]]
name = "base"
[[routes.variants]]
name = "v"
targets = [{ provider = "engine", model = "base" }]
TOML
start_listening "$OUT/gateway.log" env RUST_LOG=warn "$BIN/flywheel-gateway" --config "$OUT/gateway.toml" --listen 127.0.0.1:0
PIDS+=("$STARTED_PID"); GATEWAY=$ADDR
for round in $(seq 1 "$ROUNDS"); do
  for target in direct gateway; do
    url="http://$ENGINE_ADDR"; [ "$target" = gateway ] && url="http://$GATEWAY"
    python3 engine/bench/stream_bench.py --url "$url" --model base --concurrency "$CONCURRENCY" \
      --requests-per-stream "$REQS" --max-tokens 48 --label "$target" >>"$OUT/results.jsonl"
  done
done
python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
agg = {"direct": [], "gateway": []}
for r in rows:
    agg[r["label"]].append(r["aggregate_completion_tok_s"])
    print(f"{r['label']:8} aggregate {r['aggregate_completion_tok_s']:.2f} tok/s, TTFT median {r['ttft_s_median']} s, errors {r['errors']}")
d, g = sum(agg["direct"]) / len(agg["direct"]), sum(agg["gateway"]) / len(agg["gateway"])
print(f"mean direct {d:.2f} tok/s, gateway {g:.2f} tok/s, ratio gateway/direct {g / d:.3f}")
PY
