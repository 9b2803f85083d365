#!/usr/bin/env bash
# Runs the release binary the way the Docker image runs it, without a Docker engine:
#   - as a non-root system user (agenticai, created with useradd when missing and run as root),
#   - with a clean environment holding exactly the Dockerfile's ENV values (read from the
#     Dockerfile), except WEBSOCKET_HOST=127.0.0.1, a free WEBSOCKET_PORT and a temporary DATA_DIR,
#   - probed with the Dockerfile's own HEALTHCHECK command (read from the Dockerfile),
# then checks /ready, JSON logs, and that SIGTERM (the image's STOPSIGNAL) ends it with exit
# status 0 within the ECS stop timeout (30 s, cloudformation/service.yaml).
#
#   scripts/checks/run-image-smoke.sh [BINARY]      (default target/release/agenticai-websocket)
#
# Environment: SMOKE_USER (agenticai), WEBSOCKET_PORT (a free port), STOP_TIMEOUT (30).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BIN=${1:-target/release/agenticai-websocket}
SMOKE_USER=${SMOKE_USER:-agenticai}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}

log() { printf 'smoke: %s\n' "$*" >&2; }

if [ ! -x "$BIN" ]; then
  log "no executable at $BIN (cargo build --release --locked first)"
  exit 2
fi

passed=0
failed=0
pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }

# The final stage's ENV pairs (KEY=VALUE lines) and HEALTHCHECK command (one argv element a line).
read_dockerfile() {
  python3 - "$1" <<'PY'
import json
import shlex
import sys

text = open("Dockerfile", encoding="utf-8").read().replace("\\\n", " ")
stages = [[]]
for raw in text.splitlines():
    line = raw.strip()
    if not line or line.startswith("#"):
        continue
    if line.upper().startswith("FROM "):
        stages.append([])
    stages[-1].append(line)
final = stages[-1]
if sys.argv[1] == "env":
    for line in final:
        if line.upper().startswith("ENV "):
            for pair in shlex.split(line[4:]):
                print(pair)
elif sys.argv[1] == "healthcheck":
    for line in final:
        if line.upper().startswith("HEALTHCHECK "):
            cmd = line[line.upper().index(" CMD ") + 5:].strip()
            argv = json.loads(cmd) if cmd.startswith("[") else ["/bin/sh", "-c", cmd]
            for arg in argv:
                print(arg)
PY
}

mapfile -t IMAGE_ENV < <(read_dockerfile env)
mapfile -t HEALTHCHECK < <(read_dockerfile healthcheck)
if [ "${#IMAGE_ENV[@]}" -eq 0 ] || [ "${#HEALTHCHECK[@]}" -eq 0 ]; then
  log "could not read ENV/HEALTHCHECK from the Dockerfile"
  exit 2
fi

PORT=${WEBSOCKET_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Like the image: the binary stripped of its debug info as the Dockerfile's builder does it (the
# same objcopy commands), in a root-owned directory; a data directory the user owns.
mkdir -p "$WORK/bin" "$WORK/data"
objcopy --only-keep-debug "$BIN" "$WORK/agenticai-websocket.debug"
objcopy --strip-debug --add-gnu-debuglink="$WORK/agenticai-websocket.debug" "$BIN" "$WORK/bin/agenticai-websocket"
chmod 755 "$WORK" "$WORK/bin" "$WORK/bin/agenticai-websocket"
if nm "$WORK/bin/agenticai-websocket" | grep 'agenticai_websocket.*server.*bind' >/dev/null; then
  pass "the image's binary keeps its symbols: $(du -m "$BIN" | cut -f1) MB built, $(du -m "$WORK/bin/agenticai-websocket" | cut -f1) MB shipped, $(du -m "$WORK/agenticai-websocket.debug" | cut -f1) MB of debug info beside it"
else
  fail "the stripped binary lost its symbol table (backtraces would show no function names)"
fi

RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
  if ! id "$SMOKE_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$SMOKE_USER"
    log "created system user $SMOKE_USER"
  fi
  chown "$SMOKE_USER:" "$WORK/data"
  RUN_AS=(setpriv "--reuid=$SMOKE_USER" "--regid=$(id -g "$SMOKE_USER")" --clear-groups --)
else
  log "not root: running as $(id -un) (already non-root)"
fi

ENV_ARGS=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/nonexistent)
ENV_ARGS+=("${IMAGE_ENV[@]}")
ENV_ARGS+=(WEBSOCKET_HOST=127.0.0.1 "WEBSOCKET_PORT=$PORT" "DATA_DIR=$WORK/data")
printf 'smoke: image environment:'
printf ' %s' "${IMAGE_ENV[@]}"
printf '\nsmoke: overridden for this machine: WEBSOCKET_HOST=127.0.0.1 WEBSOCKET_PORT=%s DATA_DIR=%s\n' "$PORT" "$WORK/data"

# A plain command (no function, no subshell): setpriv and env exec, so $! is the server itself.
cd "$WORK"
"${RUN_AS[@]}" env -i "${ENV_ARGS[@]}" "$WORK/bin/agenticai-websocket" >"$WORK/out.log" 2>&1 &
SERVER_PID=$!
cd - >/dev/null

# --- runs as a non-root user
sleep 0.3
uid=$(ps -o uid= -p "$SERVER_PID" 2>/dev/null | tr -d ' ' || true)
if [ -n "$uid" ] && [ "$uid" != 0 ]; then
  pass "runs as a non-root user (uid $uid)"
else
  fail "runs as a non-root user (uid '${uid:-gone}')"
fi

# --- the Dockerfile's HEALTHCHECK turns healthy
healthy=0
for _ in $(seq 1 60); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    break
  fi
  if timeout 5 "${RUN_AS[@]}" env -i "${ENV_ARGS[@]}" "${HEALTHCHECK[@]}" >/dev/null 2>&1; then
    healthy=1
    break
  fi
  sleep 0.5
done
if [ "$healthy" -eq 1 ]; then
  pass "HEALTHCHECK (GET /health over bash /dev/tcp) healthy on port $PORT"
else
  fail "HEALTHCHECK never healthy (server output below)"
  sed 's/^/    /' "$WORK/out.log" | tail -n 30
fi

# --- /ready answers 200 once started
ready=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT && printf 'GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3 && head -n 1 <&3" 2>/dev/null | tr -d '\r' || true)
case "$ready" in
  *" 200 "*) pass "/ready: $ready" ;;
  *) fail "/ready: '${ready:-no answer}'" ;;
esac

# --- LOG_FORMAT=json: the log lines are JSON
if python3 - "$WORK/out.log" <<'PY'
import json
import sys

lines = [l for l in open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines() if l.strip()]
bad = []
for line in lines:
    try:
        json.loads(line)
    except ValueError:
        bad.append(line)
if not lines or bad:
    print(f"    {len(lines)} lines, not JSON: {bad[:3]}")
    sys.exit(1)
PY
then
  pass "log lines are JSON (LOG_FORMAT=json)"
else
  fail "log lines are JSON (LOG_FORMAT=json)"
fi

# --- SIGTERM: drain, exit 0 within the stop timeout
if kill -0 "$SERVER_PID" 2>/dev/null; then
  started=$(date +%s)
  kill -TERM "$SERVER_PID"
  stopped=0
  for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      stopped=1
      break
    fi
    sleep 0.1
  done
  if [ "$stopped" -eq 1 ]; then
    set +e
    wait "$SERVER_PID"
    status=$?
    set -e
    SERVER_PID=""
    took=$(($(date +%s) - started))
    if [ "$status" -eq 0 ]; then
      pass "SIGTERM: exit 0 after ${took}s (stop timeout ${STOP_TIMEOUT}s)"
    else
      fail "SIGTERM: exit status $status after ${took}s"
      sed 's/^/    /' "$WORK/out.log" | tail -n 20
    fi
  else
    fail "SIGTERM: still running after ${STOP_TIMEOUT}s"
  fi
else
  fail "SIGTERM: the server had already exited"
  sed 's/^/    /' "$WORK/out.log" | tail -n 20
fi

echo "smoke: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
