#!/usr/bin/env bash
# The client libraries' tests against the real server binary, run as their users would meet
# them: the JavaScript package packed (npm pack) and the Python wheel built, each installed into
# a clean directory where the tests then run (so a file missing from a package fails them).
#   - JavaScript: a consumer type-checked with `tsc --strict` against the hand-written
#     declarations and run; the tests in Node's test runner and in a headless Chromium (driven
#     through the DevTools protocol)
#   - Python: pytest, twice: with the oldest `websockets` the package declares and the newest
#   - the README's JavaScript and Python snippets, as printed, against an anonymous loopback server
# Starts its own Redis (Debian's redis-server, loopback, a free port, a temporary directory) for
# the scenarios where a restarted or another task takes over.
#
# Usage: scripts/checks/client-tests.sh BIN      (BIN: the server binary, e.g. target/release/agenticai-websocket)
# Environment: TOOLS_DIR (.tools; the Python venv is $TOOLS_DIR/aws-venv, as in scripts/test.sh),
#              CHROMIUM (/usr/bin/chromium). Installs chromium and redis-server with apt-get if
#              missing; the packages' dependencies and TypeScript come from PyPI and npm.
set -euo pipefail

BIN=$(realpath "${1:?usage: scripts/checks/client-tests.sh BIN}")
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
TOOLS_DIR=${TOOLS_DIR:-$PWD/.tools}
VENV="$TOOLS_DIR/aws-venv"
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
TYPESCRIPT_VERSION=5.9.3
# The floor the Python package declares is the version its oldest test run installs.
WEBSOCKETS_OLDEST=$(sed -n 's/.*"websockets>=\([0-9.]*\)".*/\1/p' clients/python/pyproject.toml)
[ -n "$WEBSOCKETS_OLDEST" ] || { echo "no websockets>=X in clients/python/pyproject.toml" >&2; exit 1; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$@" >/dev/null; }
}
[ -x "$CHROMIUM" ] || apt_install chromium
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"

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

echo "--- packing the JavaScript package and building the Python wheel"
packages=$work/packages
mkdir -p "$packages"
(cd clients/js && npm pack --silent --pack-destination "$packages" >/dev/null)
# pip builds in a temporary directory (flit_core): nothing is left in clients/python.
"$VENV/bin/pip" wheel -q --disable-pip-version-check --no-deps --wheel-dir "$packages" ./clients/python
ls "$packages"

# A clean directory holding the installed package and a copy of the tests and examples, which
# import it by its name as an application does.
js_consumer=$work/js-consumer
mkdir -p "$js_consumer"
printf '{ "name": "consumer", "private": true, "type": "module" }\n' >"$js_consumer/package.json"
cp -r clients/js/test clients/js/examples "$js_consumer/"
(cd "$js_consumer" && npm install --silent --no-audit --no-fund "$packages"/agenticai-websocket-client-*.tgz "typescript@$TYPESCRIPT_VERSION")

echo "--- JavaScript declarations: a consumer type-checked with tsc --strict, then run"
(cd "$js_consumer" && node_modules/.bin/tsc -p test/tsconfig.json && node "${node_flags[@]}" consumer-build/consumer.js)
echo "--- JavaScript client in Node (the packed package)"
(cd "$js_consumer" && node "${node_flags[@]}" --test test/client.test.js test/streams.test.js test/control.test.js)
echo "--- JavaScript client in headless Chromium (the packed package)"
(cd "$js_consumer" && node "${node_flags[@]}" --test test/browser.test.js)

python_consumer=$work/python-consumer
mkdir -p "$python_consumer"
cp -r clients/python/tests clients/python/examples "$python_consumer/"
newest=$(sed -n 's/^websockets==//p' clients/python/requirements-test.txt)
for websockets_version in "$WEBSOCKETS_OLDEST" "$newest"; do
  echo "--- Python client (the built wheel) with websockets $websockets_version"
  # A fresh venv each: the wheel and the pinned test tools, then this websockets version.
  venv=$work/python-websockets-$websockets_version
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r clients/python/requirements-test.txt "$packages"/agenticai_websocket-*.whl
  "$venv/bin/pip" install -q --disable-pip-version-check "websockets==$websockets_version"
  (cd "$python_consumer" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests)
done

echo "--- the README's client snippets, as printed, against an anonymous loopback server"
"$venv/bin/python" scripts/checks/readme_snippets_test.py "$BIN" README.md "${node_flags[@]}"
