#!/usr/bin/env bash
# The soak (issue 19): the gateway with capture on under a steady open-loop
# load (half plain, half streamed, from an instant mock provider) for
# MINUTES. Every 10 s it samples the gateway's resident memory, open file
# descriptors, the log's size on disk and its pending records; at the end it
# checks that ClickHouse holds every answered request once, and draws the
# curves (SVG, no dependencies).
#
#   scripts/soak.sh                  30 minutes at 2000 req/s
#   MINUTES=5 RATE=1000 scripts/soak.sh
#
# Knobs (environment): MINUTES (30), RATE (offered req/s, 2000: half the
# highest rate the gateway sustains with capture on here, BENCHMARKS §1),
# OUT (the samples, table and plot; $FLYWHEEL_CACHE/soak). Uses the shared
# ClickHouse (database flywheel_soak, dropped first) and ports 18380-18381.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

MINUTES=${MINUTES:-30}
RATE=${RATE:-2000}
OUT=${OUT:-$FLYWHEEL_CACHE/soak}
GW=127.0.0.1:18380
MOCK=127.0.0.1:18381
DB=flywheel_soak
KEY=sk-soak
ADMIN=soak-admin
ch() { curl -sf http://127.0.0.1:8123/ --data-binary "$1"; }
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }

rm -rf "$OUT"; mkdir -p "$OUT/wal"
build_release
scripts/services.sh start
ch "DROP DATABASE IF EXISTS $DB" >/dev/null
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$BIN/flywheel-mock" --listen "$MOCK" --threads 1 >"$OUT/mock.log" 2>&1 &
PIDS+=("$!")
cat >"$OUT/gateway.toml" <<EOF
[server]
listen = "$GW"
[auth]
enabled = true
[[auth.keys]]
tenant = "soak"
sha256 = "$(sha "$KEY")"
[admin]
token_sha256 = "$(sha "$ADMIN")"
[metering]
sink = "none"
[providers.mock]
base_url = "http://$MOCK/v1"
[[routes]]
name = "chat"
[[routes.variants]]
name = "v"
targets = [{ provider = "mock", model = "m" }]
[capture]
clickhouse_url = "http://127.0.0.1:8123"
database = "$DB"
wal_dir = "$OUT/wal"
EOF
"$BIN/flywheel-gateway" --config "$OUT/gateway.toml" >"$OUT/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
for _ in $(seq 100); do listening "$GW" && break; sleep 0.1; done
listening "$GW" || { echo "soak.sh: the gateway did not start; see $OUT/gateway.log" >&2; exit 1; }

half=$(python3 -c "print($RATE / 2)")
log "soak: $RATE req/s (half streamed) for $MINUTES min through $GW, capture into $DB"
load=("$BIN/flywheel-load" --url "http://$GW/v1/chat/completions" -H "Authorization: Bearer $KEY"
  --model chat --rate "$half" --duration "${MINUTES}m" --json)
"${load[@]}" >"$OUT/plain.json" &
LOAD_PLAIN=$!
"${load[@]}" --stream >"$OUT/stream.json" &
LOAD_STREAM=$!
PIDS+=("$LOAD_PLAIN" "$LOAD_STREAM")

metric() {
  curl -sf --max-time 2 -H "Authorization: Bearer $ADMIN" "http://$GW/metrics" \
    | awk -v m="$1" '$1 == m { print $2 }'
}
echo "t_s,rss_mb,fds,wal_mb,pending,rows" >"$OUT/samples.csv"
start=$(date +%s)
total=$((MINUTES * 60))
while kill -0 "$LOAD_PLAIN" 2>/dev/null; do
  t=$(( $(date +%s) - start ))
  rss=$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$GATEWAY_PID/status")
  fds=$(ls "/proc/$GATEWAY_PID/fd" | wc -l)
  wal=$(du -sb "$OUT/wal" | awk '{ printf "%.2f", $1 / 1048576 }')
  pending=$(metric flywheel_wal_records_pending || echo)
  rows=$(ch "SELECT count() FROM $DB.inferences" 2>/dev/null || echo 0)
  echo "$t,$rss,$fds,$wal,${pending:-},$rows" >>"$OUT/samples.csv"
  printf '\r[%-30s] %3d%%  %s / %s s  rss %s MB  fds %s  log %s MB  rows %s ' \
    "$(printf '#%.0s' $(seq $(( t * 30 / total + 1 ))))" $(( t * 100 / total )) "$t" "$total" \
    "$rss" "$fds" "$wal" "$rows" >&2
  sleep 10
done
echo >&2
wait "$LOAD_PLAIN" "$LOAD_STREAM"

log "waiting for the log to ship everything"
for _ in $(seq 240); do [ "$(metric flywheel_wal_records_pending)" = 0 ] && break; sleep 0.5; done
sleep 2
python3 - "$OUT" "$(ch "SELECT uniqExact(id), count() FROM $DB.inferences WHERE status = 200 FORMAT TSV")" <<'PY'
import csv, json, sys
out, counts = sys.argv[1], sys.argv[2].split()
uniq, rows = int(counts[0]), int(counts[1])
loads = [json.load(open(f"{out}/{k}.json")) for k in ("plain", "stream")]
ok = sum(l["ok"] for l in loads)
errors = sum(l["errors"] + l["dropped"] for l in loads)
s = list(csv.DictReader(open(f"{out}/samples.csv")))
def col(k):
    return [float(r[k]) for r in s if r[k]]
def spread(k):
    v = col(k)
    tenth = max(1, len(v) // 10)
    first, last = v[tenth:2 * tenth] or v[:1], v[-tenth:]
    return f"{min(v):g} / {max(v):g} (mean of the 2nd tenth {sum(first) / len(first):.1f}, of the last {sum(last) / len(last):.1f})"
table = [
    "| measure | value |", "| --- | ---: |",
    f"| offered | {sum(l['target_rate'] for l in loads):g} req/s for {loads[0]['duration_s'] / 60:g} min |",
    f"| achieved | {sum(l['achieved_qps'] for l in loads):.1f} req/s, {errors} errors or dropped |",
    f"| p99 plain / streamed | {loads[0]['latency_ms']['p99']:.2f} / {loads[1]['latency_ms']['p99']:.2f} ms |",
    f"| answered (200) | {ok} |",
    f"| in ClickHouse (status 200, distinct ids) | {uniq} |",
    f"| lost / duplicated rows | {max(ok - uniq, 0)} / {rows - uniq} |",
    f"| gateway RSS, MB (min / max) | {spread('rss_mb')} |",
    f"| open file descriptors (min / max) | {spread('fds')} |",
    f"| log on disk, MB (min / max) | {spread('wal_mb')} |",
]
open(f"{out}/soak.md", "w").write("\n".join(table) + "\n")
print("\n".join(table))

# Three stacked panels sharing the time axis.
W, H, PAD, GAP = 760, 150, 52, 28
panels = [("rss_mb", "gateway RSS (MB)", "#2a6fdb"), ("fds", "open fds", "#d9822b"), ("wal_mb", "log on disk (MB)", "#2b9e5a")]
t = col("t_s")
tmax = max(t) or 1
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{len(panels) * (H + GAP) + 40}" font-family="sans-serif" font-size="12">',
       f'<rect width="100%" height="100%" fill="white"/>',
       f'<text x="{PAD}" y="18" font-size="14">soak: {sum(l["target_rate"] for l in loads):g} req/s, capture on, {tmax / 60:.0f} min</text>']
for i, (k, label, color) in enumerate(panels):
    y0 = 30 + i * (H + GAP)
    v = [float(r[k]) for r in s if r[k]]
    ts = [float(r["t_s"]) for r in s if r[k]]
    hi = max(v) * 1.15 or 1
    pts = " ".join(f"{PAD + (x / tmax) * (W - PAD - 10):.1f},{y0 + H - (y / hi) * H:.1f}" for x, y in zip(ts, v))
    svg += [f'<rect x="{PAD}" y="{y0}" width="{W - PAD - 10}" height="{H}" fill="none" stroke="#ccc"/>',
            f'<text x="{PAD + 6}" y="{y0 + 14}">{label}</text>',
            f'<text x="{PAD - 6}" y="{y0 + 4}" text-anchor="end">{hi:.0f}</text>',
            f'<text x="{PAD - 6}" y="{y0 + H}" text-anchor="end">0</text>',
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>']
yb = 30 + len(panels) * (H + GAP) - GAP + 16
svg += [f'<text x="{PAD}" y="{yb}">0 s</text>', f'<text x="{W - 10}" y="{yb}" text-anchor="end">{tmax:.0f} s</text>', "</svg>"]
open(f"{out}/soak.svg", "w").write("\n".join(svg))
sys.exit(0 if ok == uniq and rows == uniq else 1)
PY
log "samples, table and plot in $OUT (samples.csv, soak.md, soak.svg)"
