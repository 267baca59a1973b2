#!/usr/bin/env bash
# Local ClickHouse and Redis for the gateway, the tests and the benchmarks.
#
#   scripts/services.sh start|stop|status|install|start-clickhouse|stop-clickhouse|start-redis|stop-redis
#
# Installs what is missing from Debian packages, then runs both servers in
# the background with their own config and data under
# $FLYWHEEL_CACHE/services (nothing in /etc is used or changed), listening on
# 127.0.0.1 only. `start` is idempotent: a server that already answers is
# left alone. The tests use stop-clickhouse / start-clickhouse to simulate an
# outage.
#
# Environment: FLYWHEEL_CH_HTTP_PORT (8123), FLYWHEEL_CH_TCP_PORT (9000),
# FLYWHEEL_REDIS_PORT (6379), FLYWHEEL_SERVICES_WAIT_S (30: how long to wait
# for a server to become ready), FLYWHEEL_SERVICES_DIR (config and data;
# $FLYWHEEL_CACHE/services). The end-to-end tests start private instances
# on free ports with their own FLYWHEEL_SERVICES_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

CH_HTTP_PORT="${FLYWHEEL_CH_HTTP_PORT:-8123}"
CH_TCP_PORT="${FLYWHEEL_CH_TCP_PORT:-9000}"
REDIS_PORT="${FLYWHEEL_REDIS_PORT:-6379}"
WAIT_S="${FLYWHEEL_SERVICES_WAIT_S:-30}"

SERVICES_DIR="${FLYWHEEL_SERVICES_DIR:-$FLYWHEEL_CACHE/services}"
CH_DIR="$SERVICES_DIR/clickhouse"
REDIS_DIR="$SERVICES_DIR/redis"
CH_PIDFILE="$CH_DIR/clickhouse-server.pid"
REDIS_PIDFILE="$REDIS_DIR/redis.pid"

# chromium (+ its driver) runs the dashboards' browser tests; prometheus checks
# the Grafana dashboards' PromQL against a live gateway; bubblewrap sandboxes
# the python graders.
PACKAGES=(clickhouse-server clickhouse-client redis-server cmake chromium chromium-driver prometheus bubblewrap)

die() { printf 'services.sh: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $*"; fi
}

package_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do package_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # RUNLEVEL=1 keeps invoke-rc.d from starting the packages' own system
  # services (a stock redis on our port, with persistence, would otherwise
  # answer our readiness check).
  as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

clickhouse_bin() {
  local b
  for b in clickhouse-server /usr/sbin/clickhouse-server /usr/bin/clickhouse-server; do
    command -v "$b" >/dev/null 2>&1 && { command -v "$b"; return; }
  done
  die "clickhouse-server not found after install"
}

clickhouse_ready() {
  [ "$(curl -sf --max-time 2 "http://127.0.0.1:$CH_HTTP_PORT/ping" 2>/dev/null)" = "Ok." ]
}

redis_ready() {
  [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
}

# Waits until `$1` (a readiness function) succeeds or $WAIT_S passes.
wait_until() {
  local check=$1 deadline=$((SECONDS + WAIT_S))
  while [ $SECONDS -lt $deadline ]; do
    "$check" && return 0
    sleep 0.1
  done
  "$check"
}

# The pid in pidfile $1, if that process is alive and its name starts
# with $2 (a stale pidfile must not make us signal a recycled pid).
live_pid() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  case "$(cat "/proc/$pid/comm" 2>/dev/null)" in "$2"*) echo "$pid" ;; *) return 1 ;; esac
}

write_clickhouse_config() {
  mkdir -p "$CH_DIR"/{data,tmp,user_files,format_schemas,log}
  # Written on every start so that port overrides take effect. No
  # interserver port: this is a single local server.
  cat >"$CH_DIR/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>$CH_DIR/log/clickhouse-server.log</log>
        <errorlog>$CH_DIR/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$CH_HTTP_PORT</http_port>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>10</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$CH_DIR/data/</path>
    <tmp_path>$CH_DIR/tmp/</tmp_path>
    <user_files_path>$CH_DIR/user_files/</user_files_path>
    <format_schema_path>$CH_DIR/format_schemas/</format_schema_path>
    <users_config>$CH_DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <!-- retention drops month partitions; no size guard for that -->
    <max_table_size_to_drop>0</max_table_size_to_drop>
    <max_partition_size_to_drop>0</max_partition_size_to_drop>
</yandex>
EOF
  cat >"$CH_DIR/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

start_clickhouse() {
  if clickhouse_ready; then
    log "clickhouse already running (http $CH_HTTP_PORT)"
    return 0
  fi
  ensure_packages
  local bin; bin=$(clickhouse_bin)
  write_clickhouse_config
  log "starting clickhouse (http $CH_HTTP_PORT, tcp $CH_TCP_PORT, data $CH_DIR/data)"
  # setsid: the server must outlive this script and the caller's process
  # group (a test that runs start-clickhouse and is then interrupted).
  # A background job of a script is not a process group leader, so setsid
  # execs in place and $! is the server's pid (18.16 writes no pidfile of
  # its own unless it daemonizes).
  setsid "$bin" --config-file="$CH_DIR/config.xml" \
    >>"$CH_DIR/log/stdout.log" 2>&1 </dev/null &
  local pid=$!
  if ! wait_until clickhouse_ready; then
    # The pidfile is written only on success, so a failed start never
    # hides the pid of a server that is still running.
    kill -TERM "$pid" 2>/dev/null || true
    echo "services.sh: clickhouse did not become ready within ${WAIT_S}s on port $CH_HTTP_PORT" >&2
    echo "--- tail $CH_DIR/log/clickhouse-server.err.log" >&2
    tail -n 20 "$CH_DIR/log/clickhouse-server.err.log" >&2 2>/dev/null || true
    echo "--- tail $CH_DIR/log/stdout.log" >&2
    tail -n 5 "$CH_DIR/log/stdout.log" >&2 2>/dev/null || true
    exit 1
  fi
  echo "$pid" >"$CH_PIDFILE"
  log "clickhouse ready"
}

stop_clickhouse() {
  local pid
  if ! pid=$(live_pid "$CH_PIDFILE" clickhouse); then
    if clickhouse_ready; then
      die "a clickhouse answers on port $CH_HTTP_PORT but was not started by this script (no live pid in $CH_PIDFILE)"
    fi
    log "clickhouse not running"
    return 0
  fi
  log "stopping clickhouse (pid $pid)"
  kill -TERM "$pid"
  local deadline=$((SECONDS + WAIT_S))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      echo "services.sh: clickhouse (pid $pid) still running ${WAIT_S}s after SIGTERM; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  rm -f "$CH_PIDFILE"
}

start_redis() {
  if redis_ready; then
    log "redis already running (port $REDIS_PORT)"
    return 0
  fi
  ensure_packages
  mkdir -p "$REDIS_DIR"
  log "starting redis (port $REDIS_PORT, no persistence)"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
    --save '' --appendonly no --dir "$REDIS_DIR" \
    --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_DIR/redis.log"
  if ! wait_until redis_ready; then
    echo "services.sh: redis did not become ready within ${WAIT_S}s on port $REDIS_PORT" >&2
    [ -f "$REDIS_DIR/redis.log" ] && { echo "--- tail $REDIS_DIR/redis.log" >&2; tail -n 30 "$REDIS_DIR/redis.log" >&2; }
    exit 1
  fi
  log "redis ready"
}

stop_redis() {
  if ! redis_ready; then
    log "redis not running"
    return 0
  fi
  log "stopping redis"
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  local deadline=$((SECONDS + WAIT_S))
  while redis_ready; do
    [ $SECONDS -ge $deadline ] && die "redis still answers ${WAIT_S}s after shutdown"
    sleep 0.1
  done
}

status() {
  local rc=0
  if clickhouse_ready; then echo "clickhouse: running (http 127.0.0.1:$CH_HTTP_PORT)"
  else echo "clickhouse: stopped"; rc=3; fi
  if command -v redis-cli >/dev/null && redis_ready; then echo "redis: running (127.0.0.1:$REDIS_PORT)"
  else echo "redis: stopped"; rc=3; fi
  return $rc
}

case "${1:-}" in
  start) ensure_packages; start_clickhouse; start_redis ;;
  stop) stop_clickhouse; command -v redis-cli >/dev/null && stop_redis || true ;;
  status) status ;;
  start-clickhouse) start_clickhouse ;;
  stop-clickhouse) stop_clickhouse ;;
  start-redis) ensure_packages; start_redis ;;
  stop-redis) stop_redis ;;
  install) ensure_packages ;;
  *) echo "usage: $0 start|stop|status|install|start-clickhouse|stop-clickhouse|start-redis|stop-redis" >&2; exit 2 ;;
esac
