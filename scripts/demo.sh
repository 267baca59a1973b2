#!/usr/bin/env bash
# The main job, end to end on this machine: a mock paid provider with
# realistic faults, the gateway in front of it with config/flywheel.example.toml,
# an open-loop load, then what the gateway measured.
#
#   scripts/demo.sh            (DURATION=20s RATE=50 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

DURATION=${DURATION:-20s}
RATE=${RATE:-50}
WORK="$FLYWHEEL_CACHE/demo"
rm -rf "$WORK"; mkdir -p "$WORK"

build_release -p flywheel-gateway -p flywheel-loadtest
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The "paid provider": 40 ms to first token, 200 tokens/s, 5 % server
# errors, and 30 % of JSON answers invalid.
start_listening "$WORK/mock.log" "$BIN/flywheel-mock" --listen 127.0.0.1:9001 \
  --latency-ms 40 --ttft-ms 40 --tokens-per-s 200 --error-rate 0.05 --json-valid-ratio 0.7
PIDS+=("$STARTED_PID")
sed "s|^path = \"flywheel-events.jsonl\"|path = \"$WORK/events.jsonl\"|" config/flywheel.example.toml >"$WORK/flywheel.toml"
start_listening "$WORK/gateway.log" "$BIN/flywheel-gateway" --config "$WORK/flywheel.toml"
PIDS+=("$STARTED_PID"); GATEWAY=$ADDR
log "gateway on $GATEWAY, mock provider on 127.0.0.1:9001"

cat >"$WORK/json.json" <<'JSON'
{"model": "chat", "messages": [{"role": "user", "content": "Alice is 31. Reply with JSON."}],
 "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema":
   {"type": "object", "required": ["name", "age"], "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}}}}
JSON
log "load: $RATE req/s for $DURATION each: plain chat, streamed chat, structured output"
"$BIN/flywheel-load" --url "http://$GATEWAY/v1/chat/completions" -H "Authorization: Bearer sk-demo" \
  --model chat --rate "$RATE" --duration "$DURATION" >"$WORK/load-chat.txt" &
LOADS=("$!")
"$BIN/flywheel-load" --url "http://$GATEWAY/v1/chat/completions" -H "Authorization: Bearer sk-demo" \
  --model chat --rate "$RATE" --duration "$DURATION" --stream >"$WORK/load-stream.txt" &
LOADS+=("$!")
"$BIN/flywheel-load" --url "http://$GATEWAY/v1/chat/completions" -H "Authorization: Bearer sk-demo" \
  --body-file "$WORK/json.json" --rate "$RATE" --duration "$DURATION" >"$WORK/load-json.txt"
wait "${LOADS[@]}"
for kind in chat stream json; do log "client view: $kind"; grep -E 'achieved|errors|latency|ttft' "$WORK/load-$kind.txt"; done
sleep 0.5

log "what the gateway metered ($WORK/events.jsonl)"
python3 - "$WORK/events.jsonl" <<'PY'
import json, sys, collections
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = collections.defaultdict(list)
for e in events:
    by[e["variant"]].append(e)
print(f"{'variant':8} {'requests':>8} {'ok':>6} {'retries':>8} {'fallbacks':>9} {'failovers':>9} {'valid.fail':>10} {'cost $':>10} {'p50 ms':>8} {'p99 ms':>8}")
for v, es in sorted(by.items()):
    lat = sorted(e["latency_ms"] for e in es)
    vf = sum(1 for e in es for a in e["attempts"] if a["outcome"] == "validation_failed")
    print(f"{v:8} {len(es):8} {sum(e['status'] == 200 for e in es):6} {sum(e['retries'] for e in es):8} "
          f"{sum(e['fallback_depth'] > 0 for e in es):9} {sum(e['failovers'] for e in es):9} {vf:10} "
          f"{sum(e['cost_usd'] for e in es):10.6f} {lat[len(lat)//2]:8.1f} {lat[int(len(lat)*.99)]:8.1f}")
PY
log "Prometheus metrics: curl http://$GATEWAY/metrics (sample below)"
curl -s "http://$GATEWAY/metrics" | grep -E '^flywheel_(requests_total|attempts_total|circuit_state)' | head -20
