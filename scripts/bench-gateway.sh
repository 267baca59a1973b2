#!/usr/bin/env bash
# Gateway overhead benchmark: at each rate, the same open-loop load goes
# direct to the mock, through the Flywheel gateway, and through the LiteLLM
# proxy, one after the other in the same run on the same mock.
#
#   scripts/bench-gateway.sh [RATES...]        (default: 100 250 500 1000 2000 4000 8000)
#   DURATION=10s WARMUP=2s LITELLM=0 CAPTURE=1 scripts/bench-gateway.sh 1000
#
# CAPTURE=1 adds a second gateway with capture on (write-ahead log shipped
# to the ClickHouse of scripts/services.sh) next to the one without, so the
# cost of capture is measured in the same run. CAPTURE_BASELINE_BIN=PATH
# (with CAPTURE=1) adds a third, another build of flywheel-gateway with
# capture on ("gateway+capture baseline"), to compare two builds in one run.
# CAPTURE_FSYNC sets capture.fsync for both (TOML: '"always"', '"never"',
# '{ interval_ms = 100 }'; default: the gateway's, interval_ms = 100).
#
# LiteLLM runs after the others, at the rates up to LITELLM_MAX_RATE (1000).
# Prints a Markdown table; raw flywheel-load JSON goes to $OUT (default
# $FLYWHEEL_CACHE/bench/gateway).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

RATES=("${@:-100 250 500 1000 2000 4000 8000}")
read -r -a RATES <<<"${RATES[*]}"
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
LITELLM=${LITELLM:-1}
CAPTURE=${CAPTURE:-0}
LITELLM_MAX_RATE=${LITELLM_MAX_RATE:-1000}
OUT=${OUT:-$FLYWHEEL_CACHE/bench/gateway}
rm -rf "$OUT"; mkdir -p "$OUT"

build_release
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_listening "$OUT/mock.log" "$BIN/flywheel-mock" --listen 127.0.0.1:0 --threads 1
PIDS+=("$STARTED_PID"); MOCK=$ADDR

cat >"$OUT/gateway.toml" <<TOML
[auth]
enabled = true
[[auth.keys]]
tenant = "bench"
sha256 = "$("$BIN/flywheel-gateway" hash-key sk-bench)"
[metering]
sink = "jsonl"
path = "$OUT/events.jsonl"
[providers.mock]
base_url = "http://$MOCK/v1"
price_input_per_1m = 0.15
price_output_per_1m = 0.60
[[routes]]
name = "mock-model"
[[routes.variants]]
name = "base"
targets = [{ provider = "mock", model = "mock-model" }]
TOML
start_listening "$OUT/gateway.log" env RUST_LOG=warn TOKIO_WORKER_THREADS=1 "$BIN/flywheel-gateway" --config "$OUT/gateway.toml" --listen 127.0.0.1:0
PIDS+=("$STARTED_PID"); GATEWAY=$ADDR

if [ "$CAPTURE" = 1 ]; then
  scripts/services.sh start
  curl -sf http://127.0.0.1:8123/ --data-binary "DROP DATABASE IF EXISTS flywheel_bench" >/dev/null
  { grep -v '^\[metering\]\|^sink\|^path' "$OUT/gateway.toml"
    printf '[capture]\ndatabase = "flywheel_bench"\nwal_dir = "%s"\nbodies = "store"\n' "$OUT/wal"
    # CAPTURE_FSYNC: capture.fsync as TOML ("always", "never", { interval_ms = 100 }).
    [ -z "${CAPTURE_FSYNC:-}" ] || printf 'fsync = %s\n' "$CAPTURE_FSYNC"
  } >"$OUT/gateway-capture.toml"
  start_listening "$OUT/gateway-capture.log" env RUST_LOG=warn TOKIO_WORKER_THREADS=1 "$BIN/flywheel-gateway" --config "$OUT/gateway-capture.toml" --listen 127.0.0.1:0
  PIDS+=("$STARTED_PID"); GATEWAY_CAPTURE=$ADDR
  if [ -n "${CAPTURE_BASELINE_BIN:-}" ]; then
    curl -sf http://127.0.0.1:8123/ --data-binary "DROP DATABASE IF EXISTS flywheel_bench_baseline" >/dev/null
    sed -e 's/^database = "flywheel_bench"/database = "flywheel_bench_baseline"/' \
        -e "s|^wal_dir = .*|wal_dir = \"$OUT/wal-baseline\"|" \
        "$OUT/gateway-capture.toml" >"$OUT/gateway-capture-baseline.toml"
    start_listening "$OUT/gateway-capture-baseline.log" env RUST_LOG=warn TOKIO_WORKER_THREADS=1 "$CAPTURE_BASELINE_BIN" --config "$OUT/gateway-capture-baseline.toml" --listen 127.0.0.1:0
    PIDS+=("$STARTED_PID"); GATEWAY_BASELINE=$ADDR
  fi
fi

if [ "$LITELLM" = 1 ]; then
  LITELLM_VENV="$FLYWHEEL_CACHE/venv-litellm"
  if ! "$LITELLM_VENV/bin/python" -c 'import litellm.proxy' 2>/dev/null; then
    log "installing litellm[proxy] into $LITELLM_VENV"
    python3 -m venv "$LITELLM_VENV"
    "$LITELLM_VENV/bin/pip" install --quiet --disable-pip-version-check 'litellm[proxy]'
  fi
  # Both proxies authenticate their callers, so both pay for it.
  LITELLM_KEY="sk-$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
  cat >"$OUT/litellm.yaml" <<YAML
model_list:
  - model_name: mock-model
    litellm_params:
      model: openai/mock-model
      api_base: http://$MOCK/v1
      api_key: sk-mock
litellm_settings:
  telemetry: false
general_settings:
  master_key: $LITELLM_KEY
YAML
  LITELLM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  LITELLM_TELEMETRY=False "$LITELLM_VENV/bin/litellm" --config "$OUT/litellm.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" \
    >"$OUT/litellm.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$LITELLM_PORT/health/liveliness" >/dev/null && break; sleep 0.5; done
  curl -sf "http://127.0.0.1:$LITELLM_PORT/health/liveliness" >/dev/null || { tail -20 "$OUT/litellm.log"; exit 1; }
fi

run() { # NAME URL RATE [HEADERS...]
  local name=$1 url=$2 rate=$3; shift 3
  "$BIN/flywheel-load" --url "$url" --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" \
    --max-in-flight 2000 --timeout 10s --json "$@" >"$OUT/$name-$rate.json"
}

for rate in "${RATES[@]}"; do
  log "rate $rate/s"
  run direct "http://$MOCK/v1/chat/completions" "$rate"
  : >"$OUT/events.jsonl"
  run gateway "http://$GATEWAY/v1/chat/completions" "$rate" -H "Authorization: Bearer sk-bench"
  sleep 0.5
  cp "$OUT/events.jsonl" "$OUT/events-$rate.jsonl"
  if [ "$CAPTURE" = 1 ]; then
    run gateway+capture "http://$GATEWAY_CAPTURE/v1/chat/completions" "$rate" -H "Authorization: Bearer sk-bench"
    if [ -n "${GATEWAY_BASELINE:-}" ]; then
      run "gateway+capture baseline" "http://$GATEWAY_BASELINE/v1/chat/completions" "$rate" -H "Authorization: Bearer sk-bench"
    fi
  fi
done

# LiteLLM last: past its capacity it keeps working through a backlog after
# the load stops, which would slow the other runs down.
if [ "$LITELLM" = 1 ]; then
  for rate in "${RATES[@]}"; do
    [ "$rate" -le "$LITELLM_MAX_RATE" ] || continue
    log "litellm, rate $rate/s"
    run litellm "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" "$rate" -H "Authorization: Bearer $LITELLM_KEY"
    sleep 5
  done
fi

python3 - "$OUT" "${RATES[@]}" <<'PY'
import json, os, sys
out, rates = sys.argv[1], sys.argv[2:]
def load(name, rate):
    p = f"{out}/{name}-{rate}.json"
    return json.load(open(p)) if os.path.exists(p) else None
def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")
print("| rate (req/s) | target | achieved QPS | errors+dropped | p50 ms | p99 ms | p50 overhead vs direct | p99 overhead vs direct |")
print("|---|---|---|---|---|---|---|---|")
for rate in rates:
    d = load("direct", rate)
    for name in ("direct", "gateway", "gateway+capture", "gateway+capture baseline", "litellm"):
        r = load(name, rate)
        if r is None:
            continue
        lat = r["latency_ms"]
        bad = r["sent"] - r["ok"] + r["dropped"]
        o50 = lat["p50"] - d["latency_ms"]["p50"] if name != "direct" else 0
        o99 = lat["p99"] - d["latency_ms"]["p99"] if name != "direct" else 0
        print(f"| {rate} | {name} | {r['achieved_qps']:.0f} | {bad} | {lat['p50']:.3f} | {lat['p99']:.3f} | {o50:+.3f} | {o99:+.3f} |")
print()
print("Gateway's own overhead (total minus upstream wait, from its events):")
print()
print("| rate (req/s) | events | overhead p50 ms | p99 ms | p99.9 ms |")
print("|---|---|---|---|---|")
for rate in rates:
    p = f"{out}/events-{rate}.jsonl"
    ov = [r["inference"]["overhead_ms"] for r in map(json.loads, open(p)) if "inference" in r] if os.path.exists(p) else []
    print(f"| {rate} | {len(ov)} | {pct(ov, .5):.3f} | {pct(ov, .99):.3f} | {pct(ov, .999):.3f} |")
PY
