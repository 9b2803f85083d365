#!/usr/bin/env bash
# Mutation testing of the modules that decide: access (tokens, JWKS keys, Origin, the policy,
# connection caps, request budgets), the queue dispatcher, the hub and its resume seam, and a
# session's authentication. cargo-mutants plants one small change at a time in them (a `>` made
# `>=`, a guard made `true`, a body made `Ok(())`) and runs the tests that drive that code: a
# change no test notices ("missed") is a regression the suite would let through.
#
# Too slow for every CI run (each mutant is a rebuild), and not part of scripts/test.sh: run it
# before resolving an issue that touches these modules, then kill each missed mutant with a test
# or, if it cannot change what anyone sees, explain it in docs/testing.md ("Mutation testing"),
# which also has the figures of the last run.
#
# Each group of files is run in two tiers, each mutant built and tested in place (this
# checkout's sources, restored after each mutant; keep hands off the checkout meanwhile):
#   1. the module's unit tests (`cargo test --lib FILTER`: one binary, seconds a mutant);
#   2. the mutants tier 1 missed or timed out (cargo-mutants --iterate), against the integration
#      tests that drive the module (a handful of tests/*.rs, never the whole suite).
#
# Usage: scripts/checks/mutants.sh [GROUP...]   (default: every group; `scripts/checks/mutants.sh --groups`
#        lists them)
# Environment:
#   MUTANTS_RE        only the mutants whose name matches this regex (cargo mutants --re), e.g.
#                     'TokenVerifier::|usable_key' for a quick look at a change
#   MUTANTS_OUT       where the results go ($CARGO_TARGET_DIR/mutants, else target/mutants):
#                     GROUP/mutants.out (tier 2; its log/ names the tests that caught each
#                     mutant) and GROUP/mutants.out.old (tier 1)
#   MUTANTS_BASELINE  run (default: each tier first runs its tests unmutated, and stops if they
#                     fail) or skip (they were just run green)
#   MOTO_ENDPOINT     an AWS emulator to use; without it one is started (moto_server on PATH or
#                     in .tools/aws-venv, as scripts/test.sh installs it) and stopped at the end
# Exclusions (start-up log lines, Display) and why: .cargo/mutants.toml.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
CARGO_MUTANTS_VERSION=27.1.0
MUTANTS_OUT=${MUTANTS_OUT:-${CARGO_TARGET_DIR:-target}/mutants}
export CARGO_TERM_COLOR=never
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}
export AWS_REGION=${AWS_REGION:-us-east-1}
export RUST_LOG=${RUST_LOG:-warn}

# name|files|unit-test filter (tier 1; empty: no unit tests drive them)|integration tests (tier 2)|test timeout, s
GROUPS_TABLE=(
  "tokens|src/access/token.rs src/access/jwks.rs|access::|authentication token_claims jwks_keys|120"
  "policy|src/access/mod.rs src/access/origin.rs|access::|cross_site audit_access authentication limits status|120"
  "limits|src/access/connections.rs src/access/rate.rs|access::|limits|180"
  "dispatcher|src/dispatcher/mod.rs src/dispatcher/routing.rs src/dispatcher/sqs.rs|dispatcher::|sqs|240"
  "hub|src/hub.rs src/hub/replay.rs src/hub/streams.rs|hub::|engine_contract resume fanout presence protocol streams agent_control|240"
  "session|src/session/authentication.rs||authentication session_identity|120"
)
UNIT_TIMEOUT=60

if [ "${1:-}" = "--groups" ]; then
  printf '%s\n' "${GROUPS_TABLE[@]}" |
    awk -F'|' '{printf "%-11s %s\n            tests: %s%s\n", $1, $2, ($3 == "" ? "" : "--lib " $3 " + "), $4}'
  exit 0
fi

if ! cargo mutants --version 2>/dev/null | grep -qx "cargo-mutants $CARGO_MUTANTS_VERSION"; then
  cargo install --locked --quiet cargo-mutants --version "$CARGO_MUTANTS_VERSION"
fi

# An interrupted in-place run can leave a mutant behind; never test on top of one.
if grep -rl 'changed by cargo-mutants' src; then
  echo "a mutant is still in the files above (an interrupted run): git checkout them first" >&2
  exit 1
fi

moto_pid=
trap '[ -z "$moto_pid" ] || kill "$moto_pid" 2>/dev/null || true' EXIT
if [ -z "${MOTO_ENDPOINT:-}" ]; then
  moto=$(command -v moto_server || echo .tools/aws-venv/bin/moto_server)
  [ -x "$moto" ] || { echo "no moto_server: run scripts/test.sh once, or set MOTO_ENDPOINT" >&2; exit 1; }
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$MUTANTS_OUT"
  "$moto" -H 127.0.0.1 -p "$port" >"$MUTANTS_OUT/moto.log" 2>&1 &
  moto_pid=$!
  export MOTO_ENDPOINT="http://127.0.0.1:$port"
  for _ in $(seq 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('$MOTO_ENDPOINT/', timeout=1)" 2>/dev/null && break
    sleep 0.2
  done
fi

# run_tier OUT TIMEOUT FILES CARGO_MUTANTS_ARGS...: one cargo-mutants run over FILES.
run_tier() {
  local out=$1 timeout=$2 files=$3
  shift 3
  local file_args=()
  for file in $files; do file_args+=(--file "$file"); done
  local filter=()
  [ -n "${MUTANTS_RE:-}" ] && filter=(--re "$MUTANTS_RE")
  # Exit codes 2 (missed) and 3 (timeouts) are results, summarized below; others are failures.
  cargo mutants --in-place --no-shuffle --baseline "${MUTANTS_BASELINE:-run}" --timeout "$timeout" --output "$out" \
    "${file_args[@]}" "${filter[@]}" "$@" || {
    local status=$?
    [ "$status" -eq 2 ] || [ "$status" -eq 3 ] || return "$status"
  }
}

# count LIST [FILE]: the mutants LIST names (of FILE when given); 0 when LIST is absent.
count() {
  if [ -f "$1" ]; then grep -c "^${2:-}" "$1" || true; else echo 0; fi
}

# summarize GROUP_OUT FILES: caught / missed / timed out / unviable per file, both tiers together.
summarize() {
  local out=$1 files=$2 file
  printf '%-34s %7s %7s %9s %9s\n' file caught missed "timed out" unviable
  for file in $files; do
    local caught=0 unviable=0 tier
    for tier in "$out/mutants.out.old" "$out/mutants.out"; do
      caught=$((caught + $(count "$tier/caught.txt" "$file:")))
      unviable=$((unviable + $(count "$tier/unviable.txt" "$file:")))
    done
    printf '%-34s %7d %7d %9d %9d\n' "$file" "$caught" "$(count "$out/mutants.out/missed.txt" "$file:")" \
      "$(count "$out/mutants.out/timeout.txt" "$file:")" "$unviable"
  done
  if [ "$(count "$out/mutants.out/missed.txt")" -gt 0 ]; then
    echo "missed:"
    sed 's/^/  /' "$out/mutants.out/missed.txt"
  fi
  if [ "$(count "$out/mutants.out/timeout.txt")" -gt 0 ]; then
    echo "timed out:"
    sed 's/^/  /' "$out/mutants.out/timeout.txt"
  fi
}

selected=("$@")
status=0
for row in "${GROUPS_TABLE[@]}"; do
  IFS='|' read -r name files unit_filter integration timeout <<<"$row"
  if [ ${#selected[@]} -gt 0 ] && [[ ! " ${selected[*]} " == *" $name "* ]]; then
    continue
  fi
  out="$MUTANTS_OUT/$name"
  rm -rf "$out"
  mkdir -p "$out"
  printf '\n==> %s: %s\n' "$name" "$files"
  if [ -n "$unit_filter" ]; then
    printf -- '--> tier 1: cargo test --lib %s\n' "$unit_filter"
    run_tier "$out" "$UNIT_TIMEOUT" "$files" --cargo-arg=--lib -- -- "$unit_filter"
  fi
  test_args=()
  for test in $integration; do test_args+=("--cargo-arg=--test=$test"); done
  printf -- '--> tier 2: the survivors against tests/{%s}.rs\n' "${integration// /,}"
  run_tier "$out" "$timeout" "$files" --iterate "${test_args[@]}"
  summarize "$out" "$files"
  if [ "$(count "$out/mutants.out/missed.txt")" -gt 0 ] || [ "$(count "$out/mutants.out/timeout.txt")" -gt 0 ]; then
    status=2
  fi
done
exit "$status"
