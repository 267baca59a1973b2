#!/usr/bin/env bash
# The dashboards' speed on a big table: ROWS (10 000 000) synthetic
# inferences over DAYS (30) days in ClickHouse (plus their failed attempts
# and a fifth as much feedback, scripts/dashboards-data.sql), then every
# call a page makes, timed REPEAT (3) times over the last 24 h, 7 d and
# 30 d, as the admin (all tenants) and as one tenant. Prints one line per
# call and window with the median and the worst time; BENCHMARKS.md §9.
#
#   scripts/dashboards-bench.sh            # generate (once) and measure
#   KEEP=1 scripts/dashboards-bench.sh     # reuse the generated database
#   SKIP_BUILD=1 ...                       # use the binaries already built
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ROWS=${ROWS:-10000000}
DAYS=${DAYS:-30}
REPEAT=${REPEAT:-3}
DB=${DB:-flywheel_dash_bench}
PORT=${PORT:-18290}
WORK="$FLYWHEEL_CACHE/dashboards-bench"
CH=http://127.0.0.1:8123

[ "${SKIP_BUILD:-0}" = 1 ] || build_release
scripts/services.sh start
mkdir -p "$WORK"
ch() { curl -sS --fail-with-body "$CH/" --data-binary "$1"; }

have=$(ch "EXISTS TABLE $DB.inferences" 2>/dev/null || echo 0)
if [ "${KEEP:-0}" != 1 ] || [ "$have" != 1 ] || [ "$(ch "SELECT count() FROM $DB.inferences")" -lt "$ROWS" ]; then
  log "generating $ROWS inferences over $DAYS days in $DB"
  ch "DROP DATABASE IF EXISTS $DB"
  "$CARGO_TARGET_DIR/release/flywheel-feedback" migrate --database "$DB" >/dev/null 2>&1
  now_ms=$(($(date +%s) * 1000))
  # One statement per request; comments dropped.
  sed -e '/^--/d' -e "s/{db}/$DB/g" -e "s/{rows}/$ROWS/g" -e "s/{days}/$DAYS/g" \
      -e "s/{now_ms}/$now_ms/g" scripts/dashboards-data.sql \
    | awk 'BEGIN{RS=";"} NF {print > "'"$WORK"'/stmt-" NR ".sql"}'
  for f in "$WORK"/stmt-*.sql; do
    t0=$(date +%s)
    ch "$(cat "$f")"
    log "  $(basename "$f"): $(( $(date +%s) - t0 )) s"
  done
  rm -f "$WORK"/stmt-*.sql
  ch "OPTIMIZE TABLE $DB.inference_rollup_dims_1m FINAL" 2>/dev/null || true
fi
log "$(ch "SELECT count() FROM $DB.inferences") inferences, $(ch "SELECT count() FROM $DB.attempts") attempts, $(ch "SELECT count() FROM $DB.feedback") feedback rows"

ADMIN=bench-admin
TENANT_KEY=sk-bench-tenant-1
cat >"$WORK/gateway.toml" <<EOF
[auth]
enabled = true
[[auth.keys]]
tenant = "tenant-1"
sha256 = "$(printf %s "$TENANT_KEY" | sha256sum | cut -d' ' -f1)"
[admin]
token_sha256 = "$(printf %s "$ADMIN" | sha256sum | cut -d' ' -f1)"
[providers.mock]
base_url = "http://127.0.0.1:9/v1"
[[routes]]
name = "route-0"
[[routes.variants]]
name = "chain"
weight = 1
targets = [{ provider = "mock", model = "smollm2" }]
EOF
"$CARGO_TARGET_DIR/release/flywheel-dashboards" --listen "127.0.0.1:$PORT" \
  --gateway-config "$WORK/gateway.toml" --database "$DB" >"$WORK/dashboards.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.2; done

now=$(($(date +%s) * 1000))
printf '%-28s %-6s %-8s %10s %10s\n' call window scope median_ms worst_ms
for window in 1 7 30; do
  from=$((now - window * 86400000))
  for call in overview latency reliability quality filters; do
    for scope in admin tenant; do
      token=$ADMIN; [ "$scope" = tenant ] && token=$TENANT_KEY
      times=()
      for _ in $(seq 1 "$REPEAT"); do
        t=$(curl -s -o /dev/null -w '%{time_total} %{http_code}' -H "Authorization: Bearer $token" \
          "http://127.0.0.1:$PORT/api/$call?from_ms=$from&to_ms=$now")
        [ "${t#* }" = 200 ] || { echo "/api/$call ($scope, ${window}d): HTTP ${t#* }" >&2; exit 1; }
        times+=("$(awk -v s="${t% *}" 'BEGIN{printf "%.0f", s * 1000}')")
      done
      sorted=$(printf '%s\n' "${times[@]}" | sort -n)
      printf '%-28s %-6s %-8s %10s %10s\n' "/api/$call" "${window}d" "$scope" \
        "$(echo "$sorted" | sed -n "$(( (REPEAT + 1) / 2 ))p")" "$(echo "$sorted" | tail -1)"
    done
  done
done
