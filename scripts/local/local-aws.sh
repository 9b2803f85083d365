#!/usr/bin/env bash
# Local "AWS" for the gateway: starts moto's server on 127.0.0.1 (unless one already answers there),
# creates cloudformation/platform.yaml IN MOTO'S CloudFormation (so the queues and the table are
# exactly the ones the platform stack makes), and prints the environment to export on stdout:
#
#   eval "$(scripts/local/local-aws.sh)"      # then: cargo run   (or target/release/agenticai-websocket)
#   scripts/local/local-aws.sh --list         # what the stack created (queues with attributes, table)
#   scripts/local/local-aws.sh --stop         # stop the moto server this script started
#
# Environment: MOTO_PORT (5000), STACK_NAME (agenticai-platform-dev), TOOLS_DIR (.tools).
# moto[server] and scripts/checks/requirements.txt (websockets, for scripts/checks/integration_test.py) are
# installed into $TOOLS_DIR/aws-venv from PyPI when missing, so the integration test can run as
# .tools/aws-venv/bin/python scripts/checks/integration_test.py. Progress goes to stderr; stdout carries
# only the export lines.
#
# The stack is created with LocalEmulator=true, which leaves out the resource types moto's
# CloudFormation does not implement (SQS queue policies, security group egress rules, the Secrets
# Manager secret, ElastiCache): everything the server talks to (4 agent queues + DLQs, the updates
# queue + DLQ, the DynamoDB table) is created as in AWS.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

MOTO_PORT=${MOTO_PORT:-5000}
STACK_NAME=${STACK_NAME:-agenticai-platform-dev}
TOOLS_DIR=${TOOLS_DIR:-.tools}
VENV="$TOOLS_DIR/aws-venv"
MOTO_PIN="moto[server]==5.2.5"
ENDPOINT="http://127.0.0.1:${MOTO_PORT}"
PID_FILE="$TOOLS_DIR/moto-${MOTO_PORT}.pid"
LOG_FILE="$TOOLS_DIR/moto-${MOTO_PORT}.log"

log() { printf 'local-aws: %s\n' "$*" >&2; }

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL="$ENDPOINT"

moto_answers() {
  "$VENV/bin/python" - "$ENDPOINT" <<'PY' >/dev/null 2>&1
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/", timeout=2).read()
except urllib.error.HTTPError:
    pass  # any HTTP answer will do
PY
}

install_moto() {
  local want
  want="$MOTO_PIN $(grep -v '^#' scripts/checks/requirements.txt | tr '\n' ' ')"
  if [ -x "$VENV/bin/moto_server" ] && [ -f "$VENV/.pins" ] && [ "$(cat "$VENV/.pins")" = "$want" ]; then
    return 0
  fi
  mkdir -p "$TOOLS_DIR"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      rm -rf "$VENV"
      log "python3 -m venv failed: installing python3-venv (apt)"
      if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      else
        sudo -n apt-get update -qq >/dev/null && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      fi
      python3 -m venv "$VENV"
    fi
  fi
  log "pip install $MOTO_PIN -r scripts/checks/requirements.txt"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$MOTO_PIN" -r scripts/checks/requirements.txt
  printf '%s' "$want" >"$VENV/.pins"
}

stop_moto() {
  if [ -f "$PID_FILE" ]; then
    local pid
    pid=$(cat "$PID_FILE")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      log "stopped moto_server (pid $pid)"
    fi
    rm -f "$PID_FILE"
  else
    log "no moto_server started by this script on port $MOTO_PORT"
  fi
}

start_moto() {
  if moto_answers; then
    log "moto already answers on $ENDPOINT"
    return 0
  fi
  log "starting moto_server on $ENDPOINT (log: $LOG_FILE)"
  local pid
  nohup setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  for _ in $(seq 1 100); do
    if moto_answers; then
      echo "$pid" >"$PID_FILE"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "moto_server exited:"
      tail -n 20 "$LOG_FILE" >&2
      return 1
    fi
    sleep 0.2
  done
  log "moto_server did not answer on $ENDPOINT within 20 s"
  kill "$pid" 2>/dev/null || true
  return 1
}

# Creates the stack (or reuses it), prints the exports; --list prints the created resources instead.
stack() {
  "$VENV/bin/python" - "$1" "$STACK_NAME" "$ENDPOINT" <<'PY'
import json
import sys

import boto3

mode, stack_name, endpoint = sys.argv[1:4]
session = boto3.session.Session(region_name="us-east-1")
cfn = session.client("cloudformation", endpoint_url=endpoint)
sqs = session.client("sqs", endpoint_url=endpoint)
ddb = session.client("dynamodb", endpoint_url=endpoint)


def log(msg):
    print(f"local-aws: {msg}", file=sys.stderr)


def find_stack():
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except cfn.exceptions.ClientError:
        return None
    live = [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"]
    return live[0] if live else None


stack = find_stack()
if stack is None:
    with open("cloudformation/platform.yaml", encoding="utf-8") as f:
        body = f.read()
    log(f"creating stack {stack_name} from cloudformation/platform.yaml in moto")
    cfn.create_stack(
        StackName=stack_name,
        TemplateBody=body,
        Parameters=[
            {"ParameterKey": "EnvironmentName", "ParameterValue": "dev"},
            {"ParameterKey": "LocalEmulator", "ParameterValue": "true"},
            {"ParameterKey": "EnableUpdatesQueue", "ParameterValue": "true"},
            {"ParameterKey": "EnableRedis", "ParameterValue": "false"},
        ],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    cfn.get_waiter("stack_create_complete").wait(
        StackName=stack_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    stack = find_stack()
else:
    log(f"stack {stack_name} exists ({stack['StackStatus']})")

# moto's CloudFormation ignores two properties of the table that platform.yaml sets
# (TimeToLiveSpecification: ttl, PointInTimeRecoverySpecification); apply them through the API so
# the local table matches the stack's.
table_name = next(
    (o["OutputValue"] for o in (stack or {}).get("Outputs", []) if o["OutputKey"] == "DynamoDbTableName"),
    None,
)
if table_name:
    ttl_status = ddb.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
    if ttl_status.get("TimeToLiveStatus") != "ENABLED":
        ddb.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"},
        )
        ddb.update_continuous_backups(
            TableName=table_name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )

if stack is None or stack["StackStatus"] not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
    sys.exit(f"local-aws: stack {stack_name} is not complete: {stack and stack['StackStatus']}")

outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
env = {
    "DYNAMODB_TABLE_NAME": outputs["DynamoDbTableName"],
    "SQS_QUEUE_URL_PM": outputs["SqsQueueUrlPm"],
    "SQS_QUEUE_URL_DEV": outputs["SqsQueueUrlDev"],
    "SQS_QUEUE_URL_QA": outputs["SqsQueueUrlQa"],
    "SQS_QUEUE_URL_OPS": outputs["SqsQueueUrlOps"],
}
if outputs.get("SqsQueueUrlUpdates"):
    env["SQS_QUEUE_URL_UPDATES"] = outputs["SqsQueueUrlUpdates"]

# The queues and the table must really exist, as the stack made them.
for name, url in env.items():
    if name.startswith("SQS_"):
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
ddb.describe_table(TableName=env["DYNAMODB_TABLE_NAME"])

if mode == "list":
    # (moto lists blank placeholder rows for some resources; they are left out)
    resources = [
        r
        for r in cfn.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
        if r["LogicalResourceId"]
    ]
    print(f"stack {stack_name}: {stack['StackStatus']}, {len(resources)} resources")
    for r in sorted(resources, key=lambda r: (r["ResourceType"], r["LogicalResourceId"])):
        print(f"  {r['ResourceType']:<40} {r['LogicalResourceId']:<34} {r['PhysicalResourceId']}")
    print("queues:")
    for url in sqs.list_queues().get("QueueUrls", []):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attrs.get("RedrivePolicy", "{}"))
        print(
            f"  {url}  sse={attrs.get('SqsManagedSseEnabled')}"
            f" retention={attrs.get('MessageRetentionPeriod')}"
            + (f" dlq={redrive['deadLetterTargetArn'].rsplit(':', 1)[1]} maxReceive={redrive['maxReceiveCount']}" if redrive else "")
        )
    table = ddb.describe_table(TableName=env["DYNAMODB_TABLE_NAME"])["Table"]
    ttl = ddb.describe_time_to_live(TableName=table["TableName"])["TimeToLiveDescription"]
    pitr = ddb.describe_continuous_backups(TableName=table["TableName"])["ContinuousBackupsDescription"]
    print(
        f"table: {table['TableName']} keys={[(k['AttributeName'], k['KeyType']) for k in table['KeySchema']]}"
        f" billing={table.get('BillingModeSummary', {}).get('BillingMode')}"
        f" ttl={ttl.get('AttributeName')}:{ttl.get('TimeToLiveStatus')}"
        f" pitr={pitr['PointInTimeRecoveryDescription']['PointInTimeRecoveryStatus']}"
    )
    for name, value in env.items():
        print(f"{name}={value}")
else:
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **env,
    }
    for name, value in env.items():
        print(f"export {name}='{value}'")
PY
}

case "${1:-}" in
  --stop)
    stop_moto
    ;;
  --list)
    install_moto
    start_moto
    stack list
    ;;
  "")
    install_moto
    start_moto
    stack env
    ;;
  *)
    echo "usage: $0 [--list|--stop]" >&2
    exit 2
    ;;
esac
