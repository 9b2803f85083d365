#!/usr/bin/env bash
# One Redis node against a three-shard Redis Cluster under the same publish load through the
# gateway, at the same CPU budget: every Redis process (primaries and their replicas) pinned to
# core 1, the gateway and the load generator to core 0. Then four gateway tasks on the cluster (the
# fleet the capacity plan assumes, in small): figures per task. Published in docs/benchmarks.md
# ("Redis Cluster (issue 27)") and docs/capacity.md. About 5 minutes; needs the machine to itself.
#
#   scripts/bench/redis-shards.sh [OUT_DIR]            # default: target/bench-redis-shards
#
# Per run it prints, for each Redis process: its role, the CPU seconds it spent (from /proc, 10 ms
# resolution), the publish scripts it ran and the (S)PUBLISH calls they made (INFO commandstats),
# and the load generator's summary (deliveries, loss, duplicates, latency, gateway CPU).
# The gateway on this machine saturates long before one Redis core does, so the rate Redis could
# carry at that budget is worked out from its CPU per publication, not reached.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${1:-target/bench-redis-shards}
RATE=${RATE:-4000}
DURATION=${DURATION:-30}
PROJECTS=${PROJECTS:-300}
FLEET_RATE=${FLEET_RATE:-300}
FLEET_SUBSCRIBERS=${FLEET_SUBSCRIBERS:-4000}
IDLE_SECS=${IDLE_SECS:-10}
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release --quiet -p agenticai-websocket -p loadtest
SERVER=target/release/agenticai-websocket
LOADTEST=target/release/loadtest
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# CPU seconds (user + system) a process has spent so far.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# `redis-server PORT DIR [ARGS...]` on core 1, in the background; its PID goes to PIDS.
start_redis() {
  local port=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  taskset -c 1 redis-server --port "$port" --dir "$dir" --save '' --appendonly no \
    --logfile "$dir/redis.log" "$@" &
  PIDS+=($!)
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
}

redis_pid() {
  redis-cli -p "$1" info server | awk -F: '/^process_id/ { print $2+0 }'
}

# Calls of a command on the Redis at PORT since its last resetstat: `calls PORT COMMAND`.
calls() {
  redis-cli -p "$1" info commandstats | awk -F'[:=,]' -v c="cmdstat_$2" '$1 == c { print $3 }'
}

# For each Redis port: role, CPU seconds since `mark_redis`, scripts run and (S)PUBLISH calls.
mark_redis() {
  for port in "$@"; do
    cpu_seconds "$(redis_pid "$port")" >"$OUT/cpu-$port"
    redis-cli -p "$port" config resetstat >/dev/null
  done
}
report_redis() {
  printf '%-6s %-8s %8s %10s %10s %10s\n' port role cpu_s scripts publish spublish
  for port in "$@"; do
    local role
    role=$(redis-cli -p "$port" info replication | awk -F: '/^role/ { sub(/\r/, "", $2); print $2 }')
    printf '%-6s %-8s %8.2f %10s %10s %10s\n' "$port" "$role" \
      "$(echo "$(cpu_seconds "$(redis_pid "$port")") - $(cat "$OUT/cpu-$port")" | bc)" \
      "$(calls "$port" evalsha)" "$(calls "$port" publish)" "$(calls "$port" spublish)"
  done
}

# What the Redis processes spend with a gateway connected and no load (a cluster's bus and the
# gateway's shard survey), over IDLE_SECS: `idle_redis NAME PORT...`.
idle_redis() {
  local name=$1
  shift
  mark_redis "$@"
  sleep "$IDLE_SECS"
  echo "idle, ${IDLE_SECS} s:" | tee "$OUT/$name-idle.txt"
  report_redis "$@" | tee -a "$OUT/$name-idle.txt"
}

# `gateway PORT REDIS_URL [ENV...]`: a release gateway on core 0; its PID goes to GATEWAY (and PIDS).
gateway() {
  local port=$1 url=$2
  shift 2
  env WEBSOCKET_HOST=127.0.0.1 WEBSOCKET_PORT="$port" REDIS_URL="$url" MAX_CONNECTIONS_PER_IP=0 \
    API_RATE_PER_SECOND=0 DATA_DIR="$OUT/data-$port" RUST_LOG=warn "$@" \
    taskset -c 0 "$SERVER" >"$OUT/gateway-$port.log" 2>&1 &
  PIDS+=($!)
  GATEWAY=$!
  until curl -sf "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.2; done
}

# Deliveries a gateway on PORT has made so far.
deliveries() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^agenticai_ws_deliveries_total / { print $2 }'
}

# `fanout NAME SUBSCRIBERS ARGS...`: the load generator on core 0, one subscriber a project.
fanout() {
  local name=$1 subscribers=$2
  shift 2
  taskset -c 0 "$LOADTEST" fanout --subscribers "$subscribers" --projects "$PROJECTS" --publishers 8 \
    --rate "$RATE" --duration "$DURATION" --quiet "$@" 2>&1 | tee "$OUT/$name.txt"
}

echo "== one node (and its replica), core 1"
start_redis 17100 "$OUT/one/primary"
start_redis 17101 "$OUT/one/replica" --replicaof 127.0.0.1 17100
gateway 18300 redis://127.0.0.1:17100/ && pid=$GATEWAY
idle_redis one-node 17100 17101
mark_redis 17100 17101
fanout one-node "$PROJECTS" --url ws://127.0.0.1:18300/ws --server-pid "$pid"
report_redis 17100 17101 | tee -a "$OUT/one-node.txt"
cleanup
PIDS=()

echo "== three shards, three replicas, core 1"
CLUSTER_PORTS=(17201 17202 17203 17204 17205 17206)
for port in "${CLUSTER_PORTS[@]}"; do
  start_redis "$port" "$OUT/cluster/$port" --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout 2000 --cluster-port $((port + 10000))
done
redis-cli --cluster create "${CLUSTER_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 1 --cluster-yes >"$OUT/cluster/create.log"
until redis-cli -p 17201 cluster info | grep -q 'cluster_state:ok'; do sleep 0.2; done
SEEDS=redis://127.0.0.1:17201/,redis://127.0.0.1:17202/
gateway 18301 "$SEEDS" REDIS_CLUSTER=true && pid=$GATEWAY
idle_redis cluster "${CLUSTER_PORTS[@]}"
mark_redis "${CLUSTER_PORTS[@]}"
fanout cluster "$PROJECTS" --url ws://127.0.0.1:18301/ws --server-pid "$pid"
report_redis "${CLUSTER_PORTS[@]}" | tee -a "$OUT/cluster.txt"
kill "$pid"
wait "$pid" 2>/dev/null || true

echo "== four gateway tasks on the cluster (WORKERS=1 each), subscribers and publishers spread over them"
FLEET=()
URLS=()
SERVER_PIDS=()
for i in 1 2 3 4; do
  gateway $((18310 + i)) "$SEEDS" REDIS_CLUSTER=true WORKERS=1
  FLEET+=("$GATEWAY")
  SERVER_PIDS+=(--server-pid "$GATEWAY")
  URLS+=(--url "ws://127.0.0.1:$((18310 + i))/ws")
done
declare -A CPU_BEFORE RSS_BEFORE DELIVERED_BEFORE PORT_OF
for i in 1 2 3 4; do
  pid=${FLEET[$((i - 1))]}
  PORT_OF[$pid]=$((18310 + i))
  CPU_BEFORE[$pid]=$(cpu_seconds "$pid")
  RSS_BEFORE[$pid]=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
  DELIVERED_BEFORE[$pid]=$(deliveries "${PORT_OF[$pid]}")
done
mark_redis "${CLUSTER_PORTS[@]}"
# Memory per connection is read while the subscribers are held: halfway through the publishing.
(
  sleep $((DURATION / 2 + 5))
  for pid in "${FLEET[@]}"; do
    echo "$pid $(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")"
  done >"$OUT/fleet-rss"
) &
RATE=$FLEET_RATE PROJECTS=100 fanout fleet "$FLEET_SUBSCRIBERS" "${URLS[@]}" "${SERVER_PIDS[@]}"
wait %1 2>/dev/null || true
printf '%-8s %8s %12s %12s\n' task cpu_s deliveries rss_kib_delta | tee -a "$OUT/fleet.txt"
while read -r pid rss; do
  printf '%-8s %8.2f %12s %12s\n' "$pid" "$(echo "$(cpu_seconds "$pid") - ${CPU_BEFORE[$pid]}" | bc)" \
    "$(($(deliveries "${PORT_OF[$pid]}") - DELIVERED_BEFORE[$pid]))" "$((rss - RSS_BEFORE[$pid]))" |
    tee -a "$OUT/fleet.txt"
done <"$OUT/fleet-rss"
report_redis "${CLUSTER_PORTS[@]}" | tee -a "$OUT/fleet.txt"
