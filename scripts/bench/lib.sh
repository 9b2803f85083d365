# shellcheck shell=bash
# What the benchmark scripts share; sourced, not run.

# Waits (at most 10 s) until something listens on 127.0.0.1:PORT; else says where to look (LOG)
# and exits.
wait_for_port() {
  local port=$1 log=$2
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $port; see $log" >&2
  exit 1
}
