#!/usr/bin/env bash
# The gateway alone, end to end on this machine: a mock paid provider with
# realistic faults, the gateway in front of it with config/flywheel.example.toml,
# capture into ClickHouse, an open-loop load and some feedback, then what the
# gateway measured and what landed in ClickHouse.
#
#   scripts/gateway-demo.sh    (DURATION=20s RATE=50 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

DURATION=${DURATION:-20s}
RATE=${RATE:-50}
WORK="$FLYWHEEL_CACHE/demo"
rm -rf "$WORK"; mkdir -p "$WORK"

build_release
scripts/services.sh start
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The "paid provider": 40 ms to first token, 200 tokens/s, 5 % server
# errors, and 30 % of JSON answers invalid.
start_listening "$WORK/mock.log" "$BIN/flywheel-mock" --listen 127.0.0.1:9001 \
  --latency-ms 40 --ttft-ms 40 --tokens-per-s 200 --error-rate 0.05 --json-valid-ratio 0.7
PIDS+=("$STARTED_PID")
# A fresh database and log for each demo run.
DB="flywheel_demo"
curl -sf http://127.0.0.1:8123/ --data-binary "DROP DATABASE IF EXISTS $DB" >/dev/null
sed -e "s|^path = \"flywheel-events.jsonl\"|path = \"$WORK/events.jsonl\"|" \
    -e "s|^wal_dir = .*|wal_dir = \"$WORK/wal\"|" \
    -e "s|^database = \"flywheel\"|database = \"$DB\"|" \
    -e "s|^max_segment_age_ms = .*|max_segment_age_ms = 200|" \
    config/flywheel.example.toml >"$WORK/flywheel.toml"
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
events = [r["inference"] for r in map(json.loads, open(sys.argv[1])) if "inference" in r]
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
log "feedback: a thumbs-up on 20 answers, a thumbs-down on 10"
python3 - "$WORK/events.jsonl" "$GATEWAY" <<'PY'
import json, sys, urllib.request
events = [json.loads(l)["inference"] for l in open(sys.argv[1]) if '"inference"' in l]
ok = [e["id"] for e in events if e["status"] == 200][:30]
for i, inference_id in enumerate(ok):
    body = json.dumps({"inference_id": inference_id, "metric": "thumbs_up", "value": i < 20}).encode()
    req = urllib.request.Request(f"http://{sys.argv[2]}/v1/feedback", body,
                                 {"Authorization": "Bearer sk-demo", "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
PY
log "Prometheus metrics: curl http://$GATEWAY/metrics (sample below)"
curl -s "http://$GATEWAY/metrics" | grep -E '^flywheel_(requests_total|attempts_total|circuit_state|wal_|capture_rows)' | head -24

log "in ClickHouse ($DB), per variant (deduplicated reads)"
sleep 1.5
curl -sf http://127.0.0.1:8123/ --data-binary "
  SELECT variant, count() AS requests, countIf(status = 200) AS ok, sum(retries) AS retries,
         countIf(fallback_depth > 0) AS fallbacks, round(sum(cost_usd), 6) AS cost_usd,
         round(quantile(0.5)(latency_ms), 1) AS p50_ms, round(quantile(0.99)(latency_ms), 1) AS p99_ms
  FROM $DB.inferences FINAL GROUP BY variant ORDER BY variant FORMAT PrettyCompactNoEscapes"
curl -sf http://127.0.0.1:8123/ --data-binary "
  SELECT metric, source, count() AS n, round(avg(value_float), 3) AS mean
  FROM $DB.feedback FINAL GROUP BY metric, source ORDER BY metric FORMAT PrettyCompactNoEscapes"
