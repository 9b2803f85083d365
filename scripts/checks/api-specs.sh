#!/usr/bin/env bash
# The machine-readable API descriptions, checked three ways:
#   1. docs/api/asyncapi.yaml with the AsyncAPI parser (@asyncapi/parser: errors and warnings fail)
#   2. docs/api/openapi.yaml with Redocly CLI's lint (recommended rules, docs/api/redocly.yaml)
#   3. against the server: a set of integration tests that together use every request, reply,
#      delivery and HTTP route runs with RECORD_WIRE_DIR (tests/common/wire.rs records what they
#      send and receive), and scripts/checks/api-specs-replay.mjs validates every recorded frame
#      and HTTP exchange against the two documents (an undocumented frame type, route or status
#      fails, as does a body that does not match its schema).
#
# Usage: scripts/checks/api-specs.sh [--lint-only]
# Environment: TOOLS_DIR (.tools; npm packages go to $TOOLS_DIR/api-specs, never global),
#   API_SPECS_RECORDED (a directory a test run already recorded the wire into, with
#   RECORD_WIRE_DIR: the records of the tests below are replayed from there and no test is run;
#   scripts/test.sh records during its one run of the suite),
#   MOTO_ENDPOINT (the AWS emulator the tests use when run here; without it one is started from PATH).
# Needs node 20+ and npm.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

TOOLS_DIR=${TOOLS_DIR:-.tools}
NPM_DIR="$TOOLS_DIR/api-specs"
NPM_PINS=(@asyncapi/parser@3.6.6 @redocly/cli@2.77.0 ajv@8.20.0 ajv-formats@3.0.1 yaml@2.9.1)
# Together these use every action, every reply and delivery, the close codes a test can provoke,
# and every HTTP route.
WIRE_TESTS=(protocol streams agent_control presence resume fanout authentication limits sqs status operations audit_access)

log() { printf 'api-specs: %s\n' "$*" >&2; }

installed_pins() {
  local pin
  for pin in "${NPM_PINS[@]}"; do
    local name=${pin%@*} version=${pin##*@}
    grep -q "\"version\": \"$version\"" "$NPM_DIR/node_modules/$name/package.json" 2>/dev/null || return 1
  done
}
if ! installed_pins; then
  log "npm install ${NPM_PINS[*]} into $NPM_DIR"
  mkdir -p "$NPM_DIR"
  npm install --prefix "$NPM_DIR" --no-save --no-audit --no-fund --loglevel=error "${NPM_PINS[@]}" >/dev/null
fi
NODE_MODULES="$NPM_DIR/node_modules"

log "AsyncAPI parser: docs/api/asyncapi.yaml"
node --input-type=commonjs - "$NODE_MODULES" docs/api/asyncapi.yaml <<'JS'
const [modules, file] = process.argv.slice(2);
const { Parser, fromFile } = require(require('path').resolve(modules, '@asyncapi/parser'));
(async () => {
  const { document, diagnostics } = await fromFile(new Parser(), file).parse();
  // Severity 0 is an error, 1 a warning; 2 and 3 are information and hints (the newer 3.1 exists).
  const problems = diagnostics.filter((diagnostic) => diagnostic.severity <= 1);
  for (const problem of problems) console.error(`${file} ${problem.path.join('.')}: ${problem.message}`);
  if (!document || problems.length) process.exit(1);
  console.log(`${file}: valid AsyncAPI ${document.version()}, ${document.allMessages().length} messages`);
})();
JS

log "Redocly lint: docs/api/openapi.yaml"
"$NODE_MODULES/.bin/redocly" lint --config docs/api/redocly.yaml --format=stylish docs/api/openapi.yaml 2>&1 |
  grep -v '[║╔╚]' | grep -v '^\s*$'

if [ "${1:-}" = --lint-only ]; then
  exit 0
fi

RECORDS=$(mktemp -d)
moto_pid=
cleanup() {
  rm -rf "$RECORDS"
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
if [ -n "${API_SPECS_RECORDED:-}" ]; then
  log "taking the wire recorded in $API_SPECS_RECORDED by: ${WIRE_TESTS[*]}"
  for name in "${WIRE_TESTS[@]}"; do
    # Files are named <test binary>-<hash>-<pid>.jsonl (tests/common/wire.rs).
    recorded=$(compgen -G "$API_SPECS_RECORDED/$name-*.jsonl" || true)
    if [ -z "$recorded" ]; then
      log "no wire record of tests/$name.rs in $API_SPECS_RECORDED: was the run made with RECORD_WIRE_DIR?"
      exit 1
    fi
    while IFS= read -r file; do cp "$file" "$RECORDS/"; done <<<"$recorded"
  done
else
  if [ -z "${MOTO_ENDPOINT:-}" ]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    moto_server -H 127.0.0.1 -p "$port" >"$RECORDS/moto.log" 2>&1 &
    moto_pid=$!
    export MOTO_ENDPOINT="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
  fi
  log "recording the wire of: ${WIRE_TESTS[*]}"
  test_args=()
  for name in "${WIRE_TESTS[@]}"; do test_args+=(--test "$name"); done
  RUST_LOG=${RUST_LOG:-warn} RECORD_WIRE_DIR="$RECORDS" cargo test --locked --workspace "${test_args[@]}" -q
fi

log "replaying it against docs/api"
node scripts/checks/api-specs-replay.mjs "$NODE_MODULES" docs/api "$RECORDS"
