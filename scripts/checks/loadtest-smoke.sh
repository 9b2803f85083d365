#!/usr/bin/env bash
# Smoke test of the load generator: starts a server on a free loopback port with a temporary
# DATA_DIR (local spool, local record store), runs tiny versions of every scenario and fails if
# anything is lost, duplicated or failed. It checks correctness, not speed. Well under 2 minutes.
#
# Environment: SERVER_BIN, LOADTEST_BIN (default target/release/...); SKIP_BUILD=1 uses them as
# they are (otherwise `cargo build --release --workspace --bins`, a no-op when fresh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SERVER_BIN=${SERVER_BIN:-target/release/agenticai-websocket}
LOADTEST_BIN=${LOADTEST_BIN:-target/release/loadtest}
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet --workspace --bins
fi

tmp=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Starts the server on $port with the extra environment given (VAR=value ...).
start_server() {
  env -u SQS_QUEUE_URL_PM -u SQS_QUEUE_URL_DEV -u SQS_QUEUE_URL_QA -u SQS_QUEUE_URL_OPS -u DYNAMODB_TABLE_NAME \
    -u PUBLISH_API_KEYS -u AWS_ENDPOINT_URL -u REDIS_URL \
    WEBSOCKET_HOST=127.0.0.1 WEBSOCKET_PORT="$port" DATA_DIR="$tmp/data" DRAIN_SECONDS=1 RUST_LOG=warn "$@" \
    "$SERVER_BIN" >"$tmp/server.log" 2>&1 &
  server_pid=$!
  for i in $(seq 1 100); do
    if curl -fsS --max-time 1 "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server_pid" 2>/dev/null || [ "$i" = 100 ]; then
      echo "loadtest-smoke: the server did not start" >&2; cat "$tmp/server.log" >&2; exit 1
    fi
    sleep 0.1
  done
}
# Stops the server with SIGTERM; a server that does not stop within 20 s, or exits non-zero (a
# failed drain), fails the smoke test.
stop_server() {
  kill -TERM "$server_pid"
  for _ in $(seq 1 200); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$server_pid" 2>/dev/null; then
    failed=$((failed + 1)); echo "FAIL the server did not stop within 20 s of SIGTERM"
  elif wait "$server_pid"; then
    passed=$((passed + 1)); echo "PASS the server stopped cleanly on SIGTERM"
  else
    failed=$((failed + 1)); echo "FAIL the server exited non-zero after SIGTERM"; tail -20 "$tmp/server.log"
  fi
  server_pid=""
}
start_server

url="ws://127.0.0.1:$port/ws"
passed=0 failed=0
# check NAME COMMAND...: runs one loadtest invocation, counted as PASS or FAIL.
check() {
  local name=$1; shift
  echo "--- loadtest-smoke: $name"
  if timeout 60 "$LOADTEST_BIN" "$@" --quiet; then
    passed=$((passed + 1)); echo "PASS $name"
  else
    failed=$((failed + 1)); echo "FAIL $name"
  fi
}
# scenario NAME COMMAND...: the same against the server started above.
scenario() {
  local name=$1; shift
  check "$name" "$@" --url "$url"
}

scenario "connect 200 over 2 source addresses" connect --connections 200 --projects 5 --hold 1 --source-addrs 2
scenario "connect 200 in 2 processes" connect --connections 200 --projects 5 --hold 1 --processes 2
scenario "fanout 50 subscribers x 5 projects (HTTP)" fanout --subscribers 50 --projects 5 --publishers 2 --rate 200 --duration 3 --drain-timeout 5
scenario "fanout 50 subscribers x 5 projects (WebSocket)" fanout --subscribers 50 --projects 5 --publishers 2 --rate 200 --duration 2 --via ws --drain-timeout 5
scenario "streams 2 x 5 viewers, as streams and as publications, 2 late joiners of a 100 KB stream" streams \
  --streams 2 --viewers 5 --rate 50 --duration 2 --as both --late-joiners 2 --snapshot-bytes 100000 --drain-timeout 5
scenario "forward 5 clients into the local spool" forward --clients 5 --rate 500 --duration 3 --window 16

# A run that must fail: the tool's own failure path (nothing listens on a closed port).
closed_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "--- loadtest-smoke: a failing run exits non-zero"
if timeout 30 "$LOADTEST_BIN" connect --url "ws://127.0.0.1:$closed_port/ws" --connections 3 --hold 0 --quiet --connect-timeout 1 >/dev/null 2>&1; then
  failed=$((failed + 1)); echo "FAIL connect to a closed port reported success"
else
  passed=$((passed + 1)); echo "PASS connect to a closed port exits non-zero"
fi
echo "--- loadtest-smoke: a non-loopback target is refused"
if timeout 10 "$LOADTEST_BIN" connect --url "ws://192.0.2.1:80/ws" --connections 1 --quiet >/dev/null 2>&1; then
  failed=$((failed + 1)); echo "FAIL a non-loopback target was accepted"
else
  passed=$((passed + 1)); echo "PASS a non-loopback target is refused"
fi

stop_server

# Connection tokens: each connection presents its own HS256 token with 10 project patterns.
secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
start_server JWT_SECRET="$secret"
scenario "connect 100 with a token each (HS256, 10 patterns)" connect --connections 100 --projects 5 --hold 1 \
  --token-secret "$secret" --token-patterns 10
scenario "connect 100 re-presenting one token" connect --connections 100 --projects 5 --hold 1 \
  --token-secret "$secret" --token-shared
stop_server

# The floods of the limits issue, against clients on a small budget (with a key configured,
# plain connections are clients, not services) and a 1 s handshake timeout.
start_server PUBLISH_API_KEYS=smoke-key CLIENT_RATE_PER_SECOND=10 CLIENT_RATE_BURST=20 HTTP_REQUEST_TIMEOUT_SECS=1
scenario "abuse: a ping flood, 50 connections over budget, 20 slowloris sockets" abuse --phase-secs 2 \
  --probes 2 --flooders 50 --flood-rate 50 --slowloris 20
stop_server

echo "loadtest-smoke: $passed passed, $failed failed"
[ "$failed" = 0 ]
