#!/usr/bin/env bash
# The benchmark series published in docs/benchmarks.md ("Current figures"): three runs of every
# connect and fan-out scenario of issue 6 against a fresh release server on loopback, each run's
# human summary saved as OUT_DIR/SCENARIO-RUN.txt. About 10 minutes; needs the machine to itself.
#
#   scripts/bench/benchmarks.sh [OUT_DIR]          # default: target/benchmarks
#   scripts/bench/benchmarks.sh OUT_DIR tokens     # only the connection-token series (about 4 minutes)
#   scripts/bench/benchmarks.sh OUT_DIR limits     # only the abuse-limit series (about 3 minutes)
#   scripts/bench/benchmarks.sh OUT_DIR presence   # only connect with presence on and off (about 2 minutes)
#   scripts/bench/benchmarks.sh OUT_DIR streams    # only agent streams against publications (about 4 minutes)
#
# Then the fan-out runs again against a server with WRITE_DELAY_MS=5 (docs/benchmarks.md, "The
# machine's floor and the write delay"; the floor itself was measured by the `floor` scenario, which
# is no longer part of the load generator: that section says how to rerun it), the connection-token
# series (docs/benchmarks.md, "Connection tokens"), the presence series (docs/benchmarks.md,
# "One engine, and presence") and the agent-streams series (docs/benchmarks.md, "Agent streams").
# About 25 minutes in all.
# Forwarding is measured separately against fauxqs (docs/benchmarks.md, "forward").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
OUT=${1:-target/benchmarks}
mkdir -p "$OUT"
cargo build --release --quiet --workspace --bins
LOADTEST=target/release/loadtest
SERVER_PID=

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap stop_server EXIT

# A fresh server for each connect run, so its resident memory starts from a clean baseline.
# WRITE_DELAY_MS passes through (default 0). Every load-test connection comes from 127.0.0.1 (and
# the shared-token runs are one user): the per-address and per-user caps are off.
start_server() {
  stop_server
  MAX_CONNECTIONS_PER_IP=0 MAX_CONNECTIONS_PER_USER=0 \
  WRITE_DELAY_MS=${WRITE_DELAY_MS:-0} WEBSOCKET_HOST=127.0.0.1 WEBSOCKET_PORT=$1 DATA_DIR=$(mktemp -d) DRAIN_SECONDS=1 RUST_LOG=warn \
    target/release/agenticai-websocket >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  wait_for_port "$1" "$OUT/server.log"
}

# Each scenario reports its own failures (exit 1 when anything was lost); the series goes on
# and the summaries say what happened.
run_loadtest() {
  local name=$1
  shift
  echo "== $name" >&2
  "$LOADTEST" "$@" >"$OUT/$name.txt" 2>&1 || echo "   $name reported failures" >&2
}
# A scenario against the running server, whose CPU is read from /proc.
run() {
  local name=$1
  shift
  run_loadtest "$name" "$@" --server-pid "$SERVER_PID"
}

URL=ws://127.0.0.1:18090/ws

# Connection tokens (issue 12): the same 10,000 connects anonymous, with an HS256 token each, with
# an RS256 token each (verified against a JWKS served on loopback), and re-presenting one RS256
# token (the verified-token cache); every token carries 10 project patterns.
token_series() {
  local secret jwks_dir jwks_pid
  secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
  jwks_dir=$(mktemp -d)
  python3 -c 'import json; print(json.dumps({"keys": [json.load(open("tests/fixtures/rsa-a.jwk.json"))]}))' \
    >"$jwks_dir/jwks.json"
  python3 -m http.server 18091 --bind 127.0.0.1 --directory "$jwks_dir" >/dev/null 2>&1 &
  jwks_pid=$!
  local common=(connect --url "$URL" --connections 10000 --projects 100 --hold 5 --processes 1 --source-addrs 4
    --concurrency 1000 --token-patterns 10)
  local rsa=(--token-rsa-key tests/fixtures/rsa-a.pem --token-kid rsa-a)
  for r in 1 2 3; do
    start_server 18090
    run "connect-anonymous-$r" "${common[@]}"
    JWT_SECRET=$secret start_server 18090
    run "connect-hs256-$r" "${common[@]}" --token-secret "$secret"
    JWT_JWKS_URL=http://127.0.0.1:18091/jwks.json start_server 18090
    run "connect-rs256-$r" "${common[@]}" "${rsa[@]}"
    JWT_JWKS_URL=http://127.0.0.1:18091/jwks.json start_server 18090
    run "connect-rs256-shared-$r" "${common[@]}" "${rsa[@]}" --token-shared
  done
  stop_server
  kill "$jwks_pid"
}
# Abuse limits (issue 13): the floods of `loadtest abuse` (a ping flood, 1,000 connections over
# their budget, 500 slowloris sockets) against clients on a 10/s budget (a key configured makes
# plain connections clients, not services), then 10,000 connects to show what the caps and the
# per-connection budget cost.
limits_series() {
  for r in 1 2; do
    PUBLISH_API_KEYS=bench-key CLIENT_RATE_PER_SECOND=10 CLIENT_RATE_BURST=20 start_server 18090
    run "abuse-$r" abuse --url "$URL" --phase-secs 10 --probes 10 --flooders 1000 --flood-rate 50 --slowloris 500
  done
  for r in 1 2 3; do
    start_server 18090
    run "connect-limits-$r" connect --url "$URL" --connections 10000 --projects 100 --hold 5 --processes 1 \
      --source-addrs 4 --concurrency 1000
  done
  stop_server
}
# Presence (issue 14): the same 10,000 connects (each subscribed by ?project_id=, so each one a
# presence member) with PRESENCE on and off, alternating, against a fresh server each.
presence_series() {
  for r in 1 2 3; do
    for presence in true false; do
      PRESENCE=$presence start_server 18090
      run "connect-presence-$presence-$r" connect --url $URL --connections 10000 --projects 100 --hold 5 \
        --processes 1 --source-addrs 4 --concurrency 1000
    done
  done
  stop_server
}
# Agent streams (issue 25): 10 streams of 150 appends/s to 50 viewers each, as streams and as the
# same tokens sent as plain publications, side by side, 3 runs; then 50 viewers joining, one after
# another, a stream of 500 KiB (the default STREAM_MAX_BYTES, 1 MiB, leaves room for it).
streams_series() {
  start_server 18090
  for r in 1 2 3; do
    run "streams-both-$r" streams --url "$URL" --streams 10 --viewers 50 --rate 150 --duration 20 --as both
  done
  run "streams-late-joiners" streams --url "$URL" --streams 1 --viewers 1 --duration 1 --late-joiners 50 \
    --snapshot-bytes 512000
  stop_server
}
case "${2:-all}" in
  tokens | limits | presence | streams)
    "${2}_series"
    echo "summaries in $OUT" >&2
    exit 0
    ;;
esac

for r in 1 2 3; do
  start_server 18090
  run "connect-rate-$r" connect --url $URL --connections 19000 --projects 100 --rate 10000 --hold 60 \
    --processes 2 --source-addrs 4 --concurrency 1000
done
for r in 1 2 3; do
  start_server 18090
  run "connect-max-$r" connect --url $URL --connections 19000 --projects 100 --hold 5 \
    --processes 2 --source-addrs 4 --concurrency 1000
done
start_server 18090
for r in 1 2 3; do
  run "fanout150-http-$r" fanout --url $URL --subscribers 1000 --projects 10 --publishers 8 --rate 1500 \
    --duration 30 --via http
  run "fanout150-ws-$r" fanout --url $URL --subscribers 1000 --projects 10 --publishers 8 --rate 1500 \
    --duration 30 --via ws
  run "fanout50-$r" fanout --url $URL --subscribers 1000 --projects 10 --publishers 4 --rate 500 --duration 20
  run "fanout10k-$r" fanout --url $URL --subscribers 10000 --projects 1 --publishers 1 --rate 1 --messages 5 \
    --duration 6 --concurrency 500
done
stop_server
WRITE_DELAY_MS=5 start_server 18090
for r in 1 2; do
  run "fanout150-http-delay5-$r" fanout --url $URL --subscribers 1000 --projects 10 --publishers 8 --rate 1500 \
    --duration 30 --via http
  run "fanout50-delay5-$r" fanout --url $URL --subscribers 1000 --projects 10 --publishers 4 --rate 500 --duration 20
done
token_series
limits_series
presence_series
streams_series
echo "summaries in $OUT" >&2
