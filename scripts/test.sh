#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then
#   1. vendor/actix-http checked against the crates.io release plus its patch, cargo audit (RustSec
#      advisories: scripts/checks/audit.sh), cargo fmt --check, cargo clippy --all-targets -D warnings
#   2. unit and integration tests (real sockets, moto over the AWS wire protocol) under
#      cargo-llvm-cov (source-based coverage: the server processes the tests spawn are counted
#      too), failing under 90% line coverage of the server code; the API descriptions (docs/api:
#      AsyncAPI parser, Redocly lint, and the integration tests' recorded wire replayed against
#      them: scripts/checks/api-specs.sh)
#   3. the release binary: the endpoint integration test, the client libraries' tests, the
#      container smoke test, the load-test smoke, the status page in headless Chromium, the
#      monitoring kit (alert rules, docker-compose.yml, a live Prometheus: monitoring-test.sh),
#      the platform stack created in moto's CloudFormation and used for real, with the
#      disaster-recovery scripts run against it
#   4. deploy.sh's image-scan gate (scripts/checks/deploy-test.sh), infrastructure linters
#      (hadolint, checkov, cfn-lint, shellcheck, actionlint, zizmor)
#
# Usage: scripts/test.sh            (what .ci/run and the README run)
# Environment: TOOLS_DIR (.tools), COVERAGE_MIN (90), SKIP_COVERAGE=1 runs plain cargo test.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TOOLS_DIR=${TOOLS_DIR:-$ROOT/.tools}
COVERAGE_MIN=${COVERAGE_MIN:-90}
AWS_VENV="$TOOLS_DIR/aws-venv"
MOTO_PIN="moto[server]==5.2.5"
LLVM_COV_VERSION=0.9.1
CARGO_AUDIT_VERSION=0.22.2
export CARGO_TERM_COLOR=never
# Backtraces need line tables, nothing needs the rest of the debug info: without it the test and
# coverage builds under target/ take several gigabytes less.
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1

step() { printf '\n==> %s (at %d s)\n' "$*" "$((SECONDS - started))"; }
started=$SECONDS
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

step "installing test tools"
mkdir -p "$TOOLS_DIR"
if [ ! -x "$AWS_VENV/bin/moto_server" ]; then
  python3 -m venv "$AWS_VENV"
  "$AWS_VENV/bin/pip" install -q --disable-pip-version-check "$MOTO_PIN" -r scripts/checks/requirements.txt
fi
"$AWS_VENV/bin/pip" install -q --disable-pip-version-check -r scripts/checks/requirements.txt
export PATH="$AWS_VENV/bin:$PATH"
if ! command -v redis-server >/dev/null 2>&1; then
  # Debian's redis-server, for the multi-process scale-out tests (they start their own).
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
fi
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  # Debian's prometheus (with promtool), for the monitoring kit's check (its rules, and a live scrape).
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
fi
if ! cargo audit --version 2>/dev/null | grep -q "$CARGO_AUDIT_VERSION"; then
  cargo install --locked --quiet cargo-audit --version "$CARGO_AUDIT_VERSION"
fi
if [ -z "${SKIP_COVERAGE:-}" ]; then
  # LLVM's profile tools, matching the toolchain's LLVM, for source-based coverage.
  rustup component list --installed | grep -q '^llvm-tools' || rustup component add llvm-tools
  if ! cargo llvm-cov --version 2>/dev/null | grep -q "$LLVM_COV_VERSION"; then
    cargo install --locked --quiet cargo-llvm-cov --version "$LLVM_COV_VERSION"
  fi
fi

step "vendored actix-http is the release plus its patch; rust-version is true"
bash scripts/checks/check-dependencies.sh

step "cargo audit: no RustSec advisory in the dependency graph or the vendored actix-http"
bash scripts/checks/audit.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "starting the AWS emulator (moto) on 127.0.0.1"
moto_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$moto_port" >"$TOOLS_DIR/moto-tests.log" 2>&1 &
pids+=($!)
export MOTO_ENDPOINT="http://127.0.0.1:$moto_port"
for _ in $(seq 100); do
  python3 -c "import urllib.request; urllib.request.urlopen('$MOTO_ENDPOINT/', timeout=1)" 2>/dev/null && break
  sleep 0.2
done

export RUST_LOG=${RUST_LOG:-warn}
# The suite records what its clients send and receive (tests/common/wire.rs), for the API
# descriptions' check below to replay.
WIRE_RECORDS=$(mktemp -d)
if [ -n "${SKIP_COVERAGE:-}" ]; then
  step "unit and integration tests"
  RECORD_WIRE_DIR="$WIRE_RECORDS" cargo test --locked --workspace --all-targets
else
  # The whole workspace's tests (the load generator's own unit tests too, sharing the build);
  # coverage counts the gateway's code, in the test processes and in every server process they
  # spawn (each writes its own profile when it exits).
  step "unit and integration tests, with line coverage of the gateway (fails under ${COVERAGE_MIN}%)"
  RECORD_WIRE_DIR="$WIRE_RECORDS" cargo llvm-cov --no-report --locked --workspace --all-targets
  coverage_scope=(--ignore-filename-regex '(^|/)(loadtest|tests|vendor)/')
  mkdir -p target/coverage
  cargo llvm-cov report "${coverage_scope[@]}" --cobertura --output-path target/coverage/cobertura.xml
  cargo llvm-cov report "${coverage_scope[@]}" --summary-only --fail-under-lines "$COVERAGE_MIN"
fi

step "API descriptions: docs/api validated, and the integration tests' wire replayed against them"
API_SPECS_RECORDED="$WIRE_RECORDS" bash scripts/checks/api-specs.sh
rm -rf "$WIRE_RECORDS"

step "release build"
cargo build --release --locked --workspace --bins
BIN="$ROOT/target/release/agenticai-websocket"

# Starts the release server on a free loopback port with the given environment, runs the endpoint
# integration test against it with the given arguments, then stops it (SIGTERM, drained).
endpoint_test() {
  local env_vars=() test_args=()
  while [ "$1" != -- ]; do env_vars+=("$1"); shift; done
  shift
  test_args=("$@")
  local port data_dir server_pid
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  data_dir=$(mktemp -d)
  env WEBSOCKET_HOST=127.0.0.1 WEBSOCKET_PORT="$port" DATA_DIR="$data_dir" "${env_vars[@]}" "$BIN" >"$data_dir/server.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  python3 - "$port" <<'PY'
import socket, sys, time
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close(); break
    except OSError:
        time.sleep(0.05)
PY
  python3 scripts/checks/integration_test.py "ws://127.0.0.1:$port" "${test_args[@]}"
  kill -TERM "$server_pid"
  wait "$server_pid"
  # Logs never hold a token or a secret.
  local secret
  for secret in "${WS_TOKEN:-}" "${JWT_SECRET_FOR_TEST:-}" "${PUBLISH_KEY_FOR_TEST:-}"; do
    if [ -n "$secret" ] && grep -qF "$secret" "$data_dir/server.log"; then
      echo "the server log holds a token or secret: $data_dir/server.log" >&2
      exit 1
    fi
  done
}

step "endpoint integration test against a local server"
endpoint_test -- --publish-open

step "endpoint integration test with a publish API key (a wrong key refused, the right one publishes)"
PUBLISH_KEY_FOR_TEST=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
endpoint_test PUBLISH_API_KEYS="$PUBLISH_KEY_FOR_TEST" -- --api-key "$PUBLISH_KEY_FOR_TEST"
unset PUBLISH_KEY_FOR_TEST

step "endpoint integration test with connection tokens (JWT_SECRET, a token from the token command)"
JWT_SECRET_FOR_TEST=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
WS_TOKEN=$(JWT_SECRET="$JWT_SECRET_FOR_TEST" "$BIN" token --sub integration-test --projects 'it-*' --ttl 600)
export WS_TOKEN
endpoint_test JWT_SECRET="$JWT_SECRET_FOR_TEST" RUST_LOG=debug -- --publish-open
unset WS_TOKEN JWT_SECRET_FOR_TEST

step "client libraries against the release binary (JavaScript in Node and headless Chromium, Python)"
bash scripts/checks/client-tests.sh "$BIN"

step "container smoke test (the image's user and environment)"
bash scripts/checks/run-image-smoke.sh "$BIN"

step "load-test smoke (correctness of every scenario)"
bash scripts/checks/loadtest-smoke.sh

step "status page in headless Chromium (screenshots in target/status-page/)"
bash scripts/checks/status-page-test.sh "$BIN"

step "monitoring kit: alert rules and their unit tests, docker-compose.yml, a live Prometheus scraping the release binary"
bash scripts/checks/monitoring-test.sh "$BIN"

step "platform stack in moto's CloudFormation, one forward per queue through it, then table restore and DLQ redrive"
bash scripts/checks/cfn-stack-test.sh "$BIN"

step "deploy.sh against stand-ins for aws and docker: a critical or high finding of ECR's image scan stops it"
bash scripts/checks/deploy-test.sh

step "infrastructure linters"
bash scripts/checks/check-infra.sh

step "all checks passed in $((SECONDS - started)) s"
