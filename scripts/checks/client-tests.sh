#!/usr/bin/env bash
# The client libraries' tests against the real server binary: the JavaScript client in Node's
# test runner and in a headless Chromium (driven through the DevTools protocol), and the Python
# client with pytest. Starts its own Redis (Debian's redis-server, loopback, a free port, a
# temporary directory) for the scenarios where a restarted or another task takes over.
#
# Usage: scripts/checks/client-tests.sh BIN      (BIN: the release binary, target/release/agenticai-websocket)
# Environment: TOOLS_DIR (.tools; the Python venv is $TOOLS_DIR/aws-venv, as in scripts/test.sh),
#              CHROMIUM (/usr/bin/chromium). Installs chromium and redis-server with apt-get if missing.
set -euo pipefail

BIN=$(realpath "${1:?usage: scripts/checks/client-tests.sh BIN}")
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
TOOLS_DIR=${TOOLS_DIR:-$PWD/.tools}
VENV="$TOOLS_DIR/aws-venv"
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$@" >/dev/null; }
}
[ -x "$CHROMIUM" ] || apt_install chromium
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r clients/python/requirements-test.txt

work=$(mktemp -d)
redis_pid=
cleanup() {
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$work" --save '' --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
export AGENTICAI_BIN=$BIN REDIS_PORT
# The servers' data directories and Chromium's profile go there too, removed at exit.
export TMPDIR=$work

# Node 22+ has a global WebSocket; 20 and 21 need the flag.
node_flags=()
node -e 'WebSocket' >/dev/null 2>&1 || node_flags+=(--experimental-websocket)

echo "--- JavaScript client in Node"
node "${node_flags[@]}" --test clients/js/test/client.test.js clients/js/test/streams.test.js clients/js/test/control.test.js
echo "--- JavaScript client in headless Chromium"
node "${node_flags[@]}" --test clients/js/test/browser.test.js
echo "--- Python client"
(cd clients/python && "$VENV/bin/python" -m pytest -q -p no:cacheprovider)
