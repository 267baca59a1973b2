#!/usr/bin/env bash
# The fault suite (issue 19): each scenario under a steady open-loop load
# through the real gateway, with capture into a real ClickHouse, a real
# Redis and mock providers (they stand in for paid providers and engine
# replicas, and make upstream faults on demand). Prints one table:
#
#   scenario | offered, achieved req/s | errors | p99 during the fault |
#   answered | in ClickHouse | lost | duplicated | recovered after
#
# "answered" is every request the client got a 200 for (streams: ending
# in [DONE]), warm-up included; "lost" is those whose event is not in
# ClickHouse after the suite, "duplicated" those with more than one row (no
# FINAL: what a reader without deduplication would see). "recovered after"
# is the time from the end of the fault until the gateway serves and its
# log holds nothing older than 2 s (`flywheel_wal_oldest_unshipped_age_seconds`):
# everything written during the fault has shipped.
#
#   scripts/faults.sh                 every scenario (about 10 minutes)
#   SCENARIOS="clickhouse-sigkill gateway-sigkill" scripts/faults.sh
#
# Knobs (environment): RATE (offered req/s, half plain and half streamed;
# default 100), WARMUP (seconds of load before each fault, 5), SCENARIOS
# (default: all, in the order below). Everything runs on private ports
# (18223, 18279, 18280, 18291-18292) with its own ClickHouse and Redis
# under $FLYWHEEL_CACHE/faults, so killing them touches nothing else. The
# disk-full scenario mounts a tmpfs (root, or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

RATE=${RATE:-100}
WARMUP=${WARMUP:-5}
ALL="baseline clickhouse-sigkill clickhouse-down-60s redis-killed replica-killed-mid-stream \
upstream-429-storm upstream-stalls upstream-cuts upstream-malformed gateway-sigkill \
wal-disk-full client-disconnects idle-connections"
SCENARIOS=${SCENARIOS:-$ALL}
WORK="$FLYWHEEL_CACHE/faults"
GW=127.0.0.1:18280
MOCK_A=127.0.0.1:18291
MOCK_B=127.0.0.1:18292
KEY=sk-faults
ADMIN=faults-admin
DB=flywheel_faults
export FLYWHEEL_SERVICES_DIR="$WORK/services" FLYWHEEL_CH_HTTP_PORT=18223 FLYWHEEL_CH_TCP_PORT=18224 \
  FLYWHEEL_REDIS_PORT=18279
CH="http://127.0.0.1:$FLYWHEEL_CH_HTTP_PORT/"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
ch() { curl -sf "$CH" --data-binary "$1"; }
now() { date +%s.%N; }
secs_since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }

PIDS=()
GATEWAY_PID=
MOCK_A_PID=
cleanup() {
  for p in "${PIDS[@]}" $GATEWAY_PID $MOCK_A_PID; do kill "$p" 2>/dev/null || true; done
  scripts/services.sh stop >/dev/null 2>&1 || true
  mountpoint -q "$WORK/tmpfs" 2>/dev/null && as_root umount "$WORK/tmpfs" || true
}
trap cleanup EXIT

# The gateway's configuration; $1 is the log's directory. Routes: `chat`
# (replica A, then B), and one route per upstream fault whose first target
# is B misbehaving through the mock's knob headers, then B behaving.
gateway_config() {
  local fault='{ provider = "b", model = "m" }'
  cat <<EOF
[server]
listen = "$GW"
header_read_timeout_ms = 5000     # idle and trickling connections are closed after this
[auth]
enabled = true
[[auth.keys]]
tenant = "faults"
sha256 = "$(sha "$KEY")"
requests_per_minute = 6000000     # high, but counted in Redis: the redis scenario exercises it
[admin]
token_sha256 = "$(sha "$ADMIN")"
[metering]
sink = "none"
[retry]
stream_idle_timeout_ms = 500      # a stalled stream continues on the next target after 0.5 s
[redis]
url = "redis://127.0.0.1:$FLYWHEEL_REDIS_PORT/0"
key_prefix = "faults:"
[providers.a]
base_url = "http://$MOCK_A/v1"
[providers.b]
base_url = "http://$MOCK_B/v1"
[providers.storm]
base_url = "http://$MOCK_B/v1"
headers = { "x-mock-error-rate" = "0.5", "x-mock-error-status" = "429", "x-mock-retry-after" = "1" }
[providers.stall]
base_url = "http://$MOCK_B/v1"
headers = { "x-mock-stall-after" = "2", "x-mock-stall-ms" = "5000" }
[providers.cut]
base_url = "http://$MOCK_B/v1"
headers = { "x-mock-cut-after" = "2" }
[providers.malformed]
base_url = "http://$MOCK_B/v1"
headers = { "x-mock-malformed-after" = "2" }
[providers.slow]
base_url = "http://$MOCK_B/v1"
headers = { "x-mock-tokens-per-s" = "5" }
[[routes]]
name = "chat"
[[routes.variants]]
name = "v"
targets = [{ provider = "a", model = "m" }, $fault]
EOF
  local r
  for r in storm stall cut malformed slow; do
    printf '[[routes]]\nname = "%s"\n[[routes.variants]]\nname = "v"\ntargets = [{ provider = "%s", model = "m" }, %s]\n' \
      "$r" "$r" "$fault"
  done
  cat <<EOF
[capture]
clickhouse_url = "$CH"
database = "$DB"
wal_dir = "$1"
max_segment_age_ms = 200
max_backoff_ms = 2000             # the longest wait between two tries to ship after a failure
when_log_refuses = "refuse"       # a full log turns inference away (503) rather than lose its event
EOF
}

start_mock_a() {
  "$BIN/flywheel-mock" --listen "$MOCK_A" --ttft-ms 20 --tokens-per-s 100 >>"$WORK/mock-a.log" 2>&1 &
  MOCK_A_PID=$!
  for _ in $(seq 50); do listening "$MOCK_A" && return; sleep 0.1; done
}

# Starts the gateway with its log in $1 and waits until it serves.
start_gateway() {
  gateway_config "$1" >"$WORK/gateway.toml"
  "$BIN/flywheel-gateway" --config "$WORK/gateway.toml" >>"$WORK/gateway.log" 2>&1 &
  GATEWAY_PID=$!
  for _ in $(seq 100); do listening "$GW" && return; sleep 0.1; done
  echo "faults.sh: the gateway did not start; see $WORK/gateway.log" >&2; exit 1
}

stop_gateway() { kill "$GATEWAY_PID" 2>/dev/null || true; wait "$GATEWAY_PID" 2>/dev/null || true; }

# Waits (60 s at most) until the gateway's log has shipped every record.
drain() {
  local pending
  for _ in $(seq 240); do
    pending=$(curl -sf --max-time 1 -H "Authorization: Bearer $ADMIN" "http://$GW/metrics" 2>/dev/null \
      | awk '/^flywheel_wal_records_pending/ { print $2 }')
    [ "$pending" = 0 ] && return
    sleep 0.25
  done
  echo "faults.sh: the log still holds $pending records after 60 s" >&2
}

# The age of the oldest unshipped record, from the gateway's metrics; empty
# while it does not answer.
oldest_unshipped() {
  curl -sf --max-time 1 -H "Authorization: Bearer $ADMIN" "http://$GW/metrics" 2>/dev/null \
    | awk '/^flywheel_wal_oldest_unshipped_age_seconds/ { print $2 }'
}

# Polls from $1 (the end of the fault) until the gateway serves and its
# log's oldest record is under 2 s old; prints the seconds it took, or
# "> 120" .
await_recovery() {
  local healed=$1 age
  while true; do
    age=$(oldest_unshipped)
    if [ -n "$age" ] && python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 2 else 1)" "$age"; then
      secs_since "$healed"; return
    fi
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 120 else 1)" "$(secs_since "$healed")"; then
      echo "> 120"; return
    fi
    sleep 0.25
  done
}

# --- the faults: each injects, holds and heals, and returns when healed ----
# (the load runs on around it; $HOLD is the fault's length).

clickhouse_pid() { cat "$FLYWHEEL_SERVICES_DIR/clickhouse/clickhouse-server.pid"; }
redis_pid() { cat "$FLYWHEEL_SERVICES_DIR/redis/redis.pid"; }

fault_baseline() { sleep "$HOLD"; }
fault_clickhouse_sigkill() {
  kill -9 "$(clickhouse_pid)"; sleep "$HOLD"
  scripts/services.sh start-clickhouse >/dev/null 2>&1
}
fault_clickhouse_down_60s() {
  scripts/services.sh stop-clickhouse >/dev/null 2>&1; sleep "$HOLD"
  scripts/services.sh start-clickhouse >/dev/null 2>&1
}
fault_redis_killed() {
  kill -9 "$(redis_pid)"; sleep "$HOLD"
  scripts/services.sh start-redis >/dev/null 2>&1
}
fault_replica_killed_mid_stream() {
  kill -9 "$MOCK_A_PID"; wait "$MOCK_A_PID" 2>/dev/null || true; sleep "$HOLD"; start_mock_a
}
fault_gateway_sigkill() {
  kill -9 "$GATEWAY_PID"; wait "$GATEWAY_PID" 2>/dev/null || true
  start_gateway "$WORK/wal"
}
fault_wal_disk_full() {
  # Fill what the log's tmpfs has left, hold, free it.
  dd if=/dev/zero of="$WORK/tmpfs/filler" bs=64K 2>/dev/null || true
  df -k "$WORK/tmpfs" | awk 'NR == 2 { print "the log'"'"'s tmpfs: " $3 " KiB used, " $4 " KiB free" }' | tee "$DIR/filled" >&2
  sleep "$HOLD"; rm -f "$WORK/tmpfs/filler"
}
fault_client_disconnects() {
  # Streams of ~3 s on route `slow`, abandoned by their clients after 0.3 s.
  "$BIN/flywheel-load" --url "http://$GW/v1/chat/completions" -H "Authorization: Bearer $KEY" \
    --model slow --stream --rate 20 --duration "${HOLD}s" --timeout 300ms --json >"$DIR/abandoned.json"
}
fault_idle_connections() {
  python3 - "$GW" "$HOLD" <<'PY'
import socket, sys, time
host, port = sys.argv[1].split(":"); hold = float(sys.argv[2])
idle, trickle = [], []
for i in range(2000):
    s = socket.create_connection((host, int(port))); idle.append(s)
for i in range(200):
    s = socket.create_connection((host, int(port)))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"); trickle.append(s)
end = time.time() + hold
while time.time() < end:
    for s in trickle:
        try: s.sendall(b"X")
        except OSError: pass
    time.sleep(1)
for s in idle + trickle: s.close()
PY
}

# Scenario: fault function, the route the load uses, seconds the fault holds,
# what the row's note says.
declare -A FAULT ROUTE HOLDS NOTE
add() { FAULT[$1]=$2; ROUTE[$1]=$3; HOLDS[$1]=$4; NOTE[$1]=$5; }
add baseline fault_baseline chat 15 "no fault"
add clickhouse-sigkill fault_clickhouse_sigkill chat 5 "SIGKILL, restarted after 5 s"
add clickhouse-down-60s fault_clickhouse_down_60s chat 60 "stopped for 60 s"
add redis-killed fault_redis_killed chat 10 "SIGKILL, restarted after 10 s: limits fall back to per-process"
add replica-killed-mid-stream fault_replica_killed_mid_stream chat 10 "replica A SIGKILLed mid-stream, back after 10 s; streams continue on B"
add upstream-429-storm fault_baseline storm 15 "half the first target's answers are 429, Retry-After 1 s"
add upstream-stalls fault_baseline stall 15 "every first-target stream stalls after 2 chunks"
add upstream-cuts fault_baseline cut 15 "every first-target stream is cut after 2 chunks"
add upstream-malformed fault_baseline malformed 15 "every first-target stream turns malformed after 2 chunks"
add gateway-sigkill fault_gateway_sigkill chat 0 "SIGKILL under load, restarted at once"
add wal-disk-full fault_wal_disk_full chat 10 "the log's 64 MB tmpfs full for 10 s (policy refuse)"
add client-disconnects fault_client_disconnects chat 15 "20 streams/s abandoned after 0.3 s, beside the load"
add idle-connections fault_idle_connections chat 15 "2,000 idle and 200 trickling connections, beside the load"

# Runs one scenario: half the rate plain, half streamed, for WARMUP s
# before the fault, through it, and 10 s after; the statistics cover the
# fault and after. Prints the table row.
run_scenario() {
  local name=$1 route=${ROUTE[$1]}
  HOLD=${HOLDS[$1]}
  DIR="$WORK/$name"; mkdir -p "$DIR"
  local dur=$((HOLD + 10)) half
  half=$(python3 -c "print($RATE / 2)")
  local load=("$BIN/flywheel-load" --url "http://$GW/v1/chat/completions" -H "Authorization: Bearer $KEY"
    --model "$route" --rate "$half" --warmup "${WARMUP}s" --duration "${dur}s" --timeout 30s --json)
  "${load[@]}" --ids-out "$DIR/plain.ids" >"$DIR/plain.json" &
  local plain=$!
  "${load[@]}" --stream --ids-out "$DIR/stream.ids" >"$DIR/stream.json" &
  local streamed=$!
  sleep "$WARMUP"
  "${FAULT[$name]}"
  local healed; healed=$(now)
  await_recovery "$healed" >"$DIR/recovered" &
  local recovery=$!
  wait "$plain" "$streamed"
  wait "$recovery"
  cat "$DIR/plain.ids" "$DIR/stream.ids" | sed "s/^/$name\t/" \
    | curl -sf "$CH?query=INSERT%20INTO%20$DB.answered%20FORMAT%20TabSeparated" --data-binary @- >/dev/null
  python3 - "$DIR" "$RATE" >"$DIR/load.tsv" <<'PY'
import json, sys
d, rate = sys.argv[1], float(sys.argv[2])
r = [json.load(open(f"{d}/{k}.json")) for k in ("plain", "stream")]
achieved = sum(x["achieved_qps"] for x in r)
errors = sum(x["errors"] + x["dropped"] for x in r)
p99 = max(x["latency_ms"]["p99"] for x in r)
print(f"{rate:g}\t{achieved:.1f}\t{errors}\t{p99:.1f}")
PY
}

# --- the run ----------------------------------------------------------------

rm -rf "$WORK"; mkdir -p "$WORK/wal" "$WORK/tmpfs"
build_release
scripts/services.sh start
ch "CREATE DATABASE IF NOT EXISTS $DB" >/dev/null
ch "CREATE TABLE IF NOT EXISTS $DB.answered (scenario String, id String) ENGINE = Log" >/dev/null
"$BIN/flywheel-mock" --listen "$MOCK_B" --ttft-ms 20 --tokens-per-s 100 >"$WORK/mock-b.log" 2>&1 &
PIDS+=("$!")
start_mock_a
start_gateway "$WORK/wal"
log "gateway $GW, replicas $MOCK_A and $MOCK_B, ClickHouse $CH, Redis :$FLYWHEEL_REDIS_PORT; $RATE req/s offered"

for name in $SCENARIOS; do
  [ -n "${FAULT[$name]:-}" ] || { echo "faults.sh: unknown scenario $name (known: $ALL)" >&2; exit 2; }
  log "$name: ${NOTE[$name]}"
  if [ "$name" = wal-disk-full ]; then
    stop_gateway
    as_root mount -t tmpfs -o size=64m tmpfs "$WORK/tmpfs"
    start_gateway "$WORK/tmpfs/wal"
    run_scenario "$name"
    # Its log lives on the tmpfs: ship all of it before the mount goes.
    drain; stop_gateway; as_root umount "$WORK/tmpfs"
    start_gateway "$WORK/wal"
  else
    run_scenario "$name"
  fi
done

log "waiting for the log to ship everything"
drain
sleep 2

counts=$(ch "SELECT a.scenario, count(), countIf(c = 0), countIf(c > 1)
  FROM $DB.answered AS a
  ANY LEFT JOIN (SELECT toString(id) AS id, count() AS c FROM $DB.inferences GROUP BY id) USING id
  GROUP BY a.scenario FORMAT TabSeparated")
abandoned_events=$(ch "SELECT count() FROM $DB.inferences WHERE route = 'slow'" || echo 0)
rollup=$(ch "SELECT (SELECT countMerge(requests) FROM $DB.inference_rollup_1m) - (SELECT uniqExact(id) FROM $DB.inferences)")

{
  echo "| scenario | fault | offered req/s | achieved req/s | errors | p99 ms | answered | in ClickHouse | lost | duplicated | recovered after (s) |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for name in $SCENARIOS; do
    IFS=$'\t' read -r offered achieved errors p99 <"$WORK/$name/load.tsv"
    row=$(printf '%s\n' "$counts" | awk -F'\t' -v s="$name" '$1 == s { print $2 "\t" $3 "\t" $4 }')
    IFS=$'\t' read -r answered lost dup <<<"${row:-0	0	0}"
    echo "| $name | ${NOTE[$name]} | $offered | $achieved | $errors | $p99 | $answered | $((answered - lost)) | $lost | $dup | $(cat "$WORK/$name/recovered") |"
  done
} | tee "$WORK/faults.md"
if [ -f "$WORK/client-disconnects/abandoned.json" ]; then
  sent=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['sent'])" "$WORK/client-disconnects/abandoned.json")
  echo "abandoned streams: $sent sent, $abandoned_events events in ClickHouse (every abandoned request is metered too)" | tee -a "$WORK/faults.md"
fi
echo "rollup requests minus distinct inferences: $rollup (0: the rollups count nothing twice)" | tee -a "$WORK/faults.md"
log "table in $WORK/faults.md; logs in $WORK"
lost_total=$(printf '%s\n' "$counts" | awk -F'\t' '{ l += $3; d += $4 } END { print l + d }')
[ "${lost_total:-0}" -eq 0 ] && [ "$rollup" = 0 ]
