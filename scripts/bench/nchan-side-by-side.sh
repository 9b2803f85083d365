#!/usr/bin/env bash
# Issue 29's figures side by side with Nchan (C, on nginx), in one run on the same client: for
# each run, a fresh gateway (release binary, on 127.0.0.1:18090) and a fresh nginx + Nchan
# (scripts/bench/nchan/nginx.conf, on 127.0.0.1:18092) are started, and each scenario runs against
# one then the other (the order swapped every other run, so a drift of the machine does not
# always favour the same server):
#   - connect --connections 5000 --projects 100 --hold 10 --concurrency 256: memory per idle
#     subscribed connection, connects per second, server CPU per connect;
#   - fanout --subscribers 1000 --projects 10 --rate 1500 --duration 30, and the same at 150/s:
#     server CPU per delivery and delivery p99.
# Each server's CPU is read from /proc of its processes (nginx: master and workers), and so is its
# memory, for both (--server-memory pss: the proportional set size, which counts the pages nginx's
# workers share with their master once), so the two memory figures have one source. Each run
# prints one table of ratios (ours / Nchan) and saves it, with every scenario's JSON result and
# summary, under OUT_DIR. About 4 minutes a run; the figures mean something only on a quiet
# machine.
#
#   scripts/bench/nchan-side-by-side.sh [RUNS] [OUT_DIR]     # defaults: 3, target/nchan-side-by-side
#
# GATEWAY_BIN (default target/release/agenticai-websocket) and LOADTEST (default
# target/release/loadtest) name the release binaries; when either is absent, the release build of
# the workspace makes it. Needs nginx and Debian's libnginx-mod-nchan.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
RUNS=${1:-3}
OUT=${2:-target/nchan-side-by-side}
GATEWAY_BIN=${GATEWAY_BIN:-target/release/agenticai-websocket}
LOADTEST=${LOADTEST:-target/release/loadtest}
NGINX_CONF=$PWD/scripts/bench/nchan/nginx.conf
GATEWAY_PORT=18090
# The port nginx.conf listens on.
NCHAN_PORT=18092
mkdir -p "$OUT"
if [ ! -x "$GATEWAY_BIN" ] || [ ! -x "$LOADTEST" ]; then
  cargo build --release --quiet --workspace --bins
fi

GATEWAY_PID=
NGINX_PID=
NGINX_PREFIX=

stop_servers() {
  local pid
  for pid in "$GATEWAY_PID" "$NGINX_PID"; do
    if [ -n "$pid" ]; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  GATEWAY_PID=
  NGINX_PID=
  if [ -n "$NGINX_PREFIX" ]; then
    rm -rf "$NGINX_PREFIX"
    NGINX_PREFIX=
  fi
}
trap stop_servers EXIT

# Every connection comes from 127.0.0.1 and every publication from one client: the per-address
# cap and the publish budget are off, as a benchmark from one address needs (benchmarks.sh does
# the same).
start_gateway() {
  MAX_CONNECTIONS_PER_IP=0 MAX_CONNECTIONS_PER_USER=0 API_RATE_PER_SECOND=0 \
  WEBSOCKET_HOST=127.0.0.1 WEBSOCKET_PORT=$GATEWAY_PORT DATA_DIR=$(mktemp -d) DRAIN_SECONDS=1 RUST_LOG=warn \
    "$GATEWAY_BIN" >"$OUT/gateway-$1.log" 2>&1 &
  GATEWAY_PID=$!
  wait_for_port "$GATEWAY_PORT" "$OUT/gateway-$1.log"
}

# nginx in the foreground (daemon off in nginx.conf): $! is its master. Its workers are the
# master's children, read from /proc once both are up.
start_nchan() {
  NGINX_PREFIX=$(mktemp -d /tmp/nchan-side-by-side.XXXXXX)
  nginx -p "$NGINX_PREFIX" -e stderr -c "$NGINX_CONF" >"$OUT/nginx-$1.log" 2>&1 &
  NGINX_PID=$!
  wait_for_port "$NCHAN_PORT" "$OUT/nginx-$1.log"
  NGINX_WORKERS=()
  for _ in $(seq 50); do
    read -r -a NGINX_WORKERS <"/proc/$NGINX_PID/task/$NGINX_PID/children" || true
    [ "${#NGINX_WORKERS[@]}" -ge 2 ] && return 0
    sleep 0.1
  done
  echo "nginx started no workers; see $OUT/nginx-$1.log" >&2
  exit 1
}

# One scenario against one server: the JSON result in OUT/NAME-SERVER-RUN.json, the summary
# beside it (.txt). A run that reports failures goes on; the table says so.
run_scenario() {
  local name=$1 server=$2 run=$3
  shift 3
  local target
  if [ "$server" = gateway ]; then
    target=(--url "ws://127.0.0.1:$GATEWAY_PORT/ws" --server-pid "$GATEWAY_PID")
  else
    target=(--url "ws://127.0.0.1:$NCHAN_PORT/" --server nchan --server-pid "$NGINX_PID")
    local worker
    for worker in "${NGINX_WORKERS[@]}"; do
      target+=(--server-pid "$worker")
    done
  fi
  echo "== run $run: $name against $server" >&2
  "$LOADTEST" "$@" "${target[@]}" --server-memory pss --json --quiet \
    >"$OUT/$name-$server-$run.json" 2>"$OUT/$name-$server-$run.txt" ||
    echo "   $name against $server reported failures (see $OUT/$name-$server-$run.txt)" >&2
}

# The table of one run, from its JSON results.
table() {
  python3 - "$OUT" "$1" <<'PY'
import json, sys

out, run = sys.argv[1], sys.argv[2]

def result(name, server):
    try:
        with open(f"{out}/{name}-{server}-{run}.json") as file:
            return json.load(file)
    except (OSError, ValueError):
        return {}

def figure(name, path):
    def read(server):
        value = result(name, server)
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value
    return read

def kib(name):
    def read(server):
        value = figure(name, ["server", "pss_bytes_per_connection"])(server)
        return None if value is None else value / 1024
    return read

rows = [
    ("KiB of server memory (Pss) per idle subscribed connection", kib("connect"), "{:.2f}"),
    ("connects per second (5,000, 256 in flight)", figure("connect", ["connect_rate_per_s"]), "{:,.0f}"),
    ("us of server CPU per connect", figure("connect", ["server", "cpu_us_per_connection_ramp"]), "{:.1f}"),
]
for rate in ("1500", "150"):
    name = f"fanout{rate}"
    rows += [
        # Below the target, a server (or the shared machine) did not keep up: read its figures so.
        (f"publications/s reached (target {int(rate):,})", figure(name, ["publish_rate_per_s"]), "{:,.0f}"),
        (f"us of server CPU per delivery at {int(rate):,} publications/s",
         figure(name, ["server", "cpu_us_per_delivery"]), "{:.2f}"),
        (f"fan-out p99 at {int(rate):,} publications/s, ms", figure(name, ["latency", "p99_ms"]), "{:.1f}"),
    ]

def text(value, form):
    return "unknown" if value is None else form.format(value)

print(f"\n### run {run}: ours / Nchan\n")
print("| figure | ours | Nchan | ours / Nchan |")
print("|---|---|---|---|")
for label, read, form in rows:
    ours, nchan = read("gateway"), read("nchan")
    ratio = f"{ours / nchan:.2f}x" if ours is not None and nchan else "unknown"
    print(f"| {label} | {text(ours, form)} | {text(nchan, form)} | {ratio} |")
names = ("connect", "fanout1500", "fanout150")
for server in ("gateway", "nchan"):
    failed = [name for name in names if not result(name, server).get("ok")]
    print(f"\n{server}: " + ("every scenario passed" if not failed else "FAILED: " + ", ".join(failed)), end="")
print()
PY
}

for run in $(seq "$RUNS"); do
  start_gateway "$run"
  start_nchan "$run"
  if [ $((run % 2)) = 1 ]; then order=(gateway nchan); else order=(nchan gateway); fi
  for server in "${order[@]}"; do
    run_scenario connect "$server" "$run" connect --connections 5000 --projects 100 --hold 10 --concurrency 256
  done
  for rate in 1500 150; do
    for server in "${order[@]}"; do
      run_scenario "fanout$rate" "$server" "$run" fanout --subscribers 1000 --projects 10 --rate "$rate" --duration 30
    done
  done
  stop_servers
  table "$run" | tee "$OUT/table-$run.md"
done
echo "results in $OUT" >&2
