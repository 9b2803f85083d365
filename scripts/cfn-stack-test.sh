#!/usr/bin/env bash
# The platform stack for real, locally: creates cloudformation/platform.yaml in moto's
# CloudFormation (scripts/local-aws.sh), starts the server against the queues and the table
# that stack created, runs the endpoint integration test (one forward per agent queue among its
# checks), and verifies each of the four agent queues received exactly that one message and the
# table holds the audit records.
#
#   scripts/cfn-stack-test.sh [BINARY]     (default target/release/agenticai-websocket)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${1:-target/release/agenticai-websocket}
TOOLS_DIR=${TOOLS_DIR:-.tools}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOTO_PORT=$(free_port)
export MOTO_PORT STACK_NAME=agenticai-platform-citest
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  scripts/local-aws.sh --stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

exports=$(scripts/local-aws.sh)
eval "$exports"
for variable in DYNAMODB_TABLE_NAME SQS_QUEUE_URL_PM SQS_QUEUE_URL_DEV SQS_QUEUE_URL_QA SQS_QUEUE_URL_OPS; do
  if [ -z "${!variable:-}" ]; then
    echo "cfn-stack-test: the stack did not output $variable" >&2
    exit 1
  fi
done

port=$(free_port)
data_dir=$(mktemp -d)
WEBSOCKET_HOST=127.0.0.1 WEBSOCKET_PORT=$port DATA_DIR=$data_dir PUBLISH_API_KEYS=cfn-test-key \
  SQS_QUEUE_URL_UPDATES='' RUST_LOG=warn "$BIN" >"$data_dir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 200); do
  curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
  sleep 0.05
done

"$TOOLS_DIR/aws-venv/bin/python" scripts/integration_test.py "ws://127.0.0.1:$port" --api-key cfn-test-key

"$TOOLS_DIR/aws-venv/bin/python" - <<'PY'
import os, sys, time
import boto3

sqs = boto3.client("sqs")
failures = 0
for role in ("PM", "DEV", "QA", "OPS"):
    url = os.environ[f"SQS_QUEUE_URL_{role}"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    count = int(attributes["ApproximateNumberOfMessages"])
    ok = count == 1
    failures += not ok
    print(f"{'PASS' if ok else 'FAIL'} stack queue {role.lower()} holds the one forwarded message ({count})")
table = os.environ["DYNAMODB_TABLE_NAME"]
dynamo = boto3.client("dynamodb")
deadline = time.time() + 10
forwards = 0
while time.time() < deadline:
    items = dynamo.scan(TableName=table)["Items"]
    forwards = sum(1 for item in items if item.get("kind", {}).get("S") == "forward")
    if forwards >= 4:
        break
    time.sleep(0.2)
ok = forwards >= 4
failures += not ok
print(f"{'PASS' if ok else 'FAIL'} stack table holds the forward audit records ({forwards})")
print(f"cfn-stack: {5 - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
PY

kill -TERM "$server_pid"
wait "$server_pid"
server_pid=
