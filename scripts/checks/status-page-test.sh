#!/usr/bin/env bash
# The status page in a real headless Chromium (Debian's chromium, installed with apt-get when
# missing): starts the release server twice on loopback, open (no key) and with a publish key
# entered into the page's form, and runs scripts/checks/status_page_test.py against each while a small
# load runs. Screenshots land in target/status-page/ (not committed).
#
#   scripts/checks/status-page-test.sh [BINARY]     (default target/release/agenticai-websocket)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BIN=${1:-target/release/agenticai-websocket}
TOOLS_DIR=${TOOLS_DIR:-.tools}
PYTHON="$TOOLS_DIR/aws-venv/bin/python"
SCREENSHOTS=target/status-page

if ! command -v chromium >/dev/null 2>&1; then
  echo "status-page-test: installing chromium (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
server_pid=
cleanup() { if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

# Runs the page test against a fresh server started with the given environment.
page_test() {
  local name=$1 port data_dir
  shift
  port=$(free_port)
  data_dir=$(mktemp -d)
  env WEBSOCKET_HOST=127.0.0.1 WEBSOCKET_PORT="$port" DATA_DIR="$data_dir" RUST_LOG=warn "$@" "$BIN" \
    >"$data_dir/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 200); do
    curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.05
  done
  "$PYTHON" scripts/checks/status_page_test.py "http://127.0.0.1:$port" "$SCREENSHOTS/$name"
  kill -TERM "$server_pid"
  wait "$server_pid"
  server_pid=
  rm -rf "$data_dir"
}

page_test open
PUBLISH_API_KEY=status-page-test-key page_test with-key PUBLISH_API_KEYS=status-page-test-key
echo "status-page-test: screenshots in $SCREENSHOTS/"
