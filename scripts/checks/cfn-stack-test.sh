#!/usr/bin/env bash
# The platform stack for real, locally: creates cloudformation/platform.yaml in moto's
# CloudFormation (scripts/local/local-aws.sh), starts the server against the queues and the table
# that stack created, runs the endpoint integration test (one forward per agent queue among its
# checks), and verifies each of the four agent queues received exactly that one message and the
# table holds the audit records. Then the disaster-recovery procedures moto supports, with the
# operators' scripts against that stack: a point-in-time restore of the table into a new table
# (scripts/ops/dr-restore-table.sh), and a dead-letter queue redriven into its agent queue
# (scripts/ops/dr-redrive-dlq.sh --copy: moto lacks StartMessageMoveTask). The templates as each
# Redis choice renders them (scripts/checks/cfn_templates_test.py), and the Redis Cluster's per-node
# alarms (scripts/ops/redis-cluster-alarms.sh) on a replication group made through the API.
#
#   scripts/checks/cfn-stack-test.sh [BINARY]     (default target/release/agenticai-websocket)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BIN=${1:-target/release/agenticai-websocket}
TOOLS_DIR=${TOOLS_DIR:-.tools}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOTO_PORT=$(free_port)
export MOTO_PORT STACK_NAME=agenticai-platform-citest
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  scripts/local/local-aws.sh --stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

exports=$(scripts/local/local-aws.sh)
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
  SQS_QUEUE_URL_UPDATES='' RUST_LOG=warn EMF_INTERVAL_SECS=1 "$BIN" >"$data_dir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 200); do
  curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
  sleep 0.05
done

"$TOOLS_DIR/aws-venv/bin/python" scripts/checks/integration_test.py "ws://127.0.0.1:$port" --api-key cfn-test-key

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

# The templates as each parameter choice renders them (moto's CloudFormation cannot create the
# service stack: it lacks the target group's attributes; nor ElastiCache): the dashboard and alarms
# read only metrics the server emits and CloudWatch accepts the dashboard, with no Redis, one node
# or a cluster; the task's Redis environment for each; the cluster's pieces in the platform stack.
"$TOOLS_DIR/aws-venv/bin/python" scripts/checks/cfn_templates_test.py "$data_dir/server.log"

# The DR scripts drive the AWS CLI, as operators do; the venv gets one when the machine has none.
if ! command -v aws >/dev/null 2>&1; then
  "$TOOLS_DIR/aws-venv/bin/pip" install -q --disable-pip-version-check awscli
  export PATH="$TOOLS_DIR/aws-venv/bin:$PATH"
fi
restored=agenticai-websocket-dev-restored
bash scripts/ops/dr-restore-table.sh dev --latest --target "$restored"
"$TOOLS_DIR/aws-venv/bin/python" - "$DYNAMODB_TABLE_NAME" "$restored" <<'PY'
import sys
import boto3

dynamo = boto3.client("dynamodb")
source, restored = sys.argv[1:3]


def keys(table):
    return sorted((item["pk"]["S"], item["sk"]["S"]) for item in dynamo.scan(TableName=table)["Items"])


ok = keys(source) == keys(restored) and len(keys(source)) >= 4
print(f"{'PASS' if ok else 'FAIL'} dr: the restored table holds the source's {len(keys(restored))} records")
backups = dynamo.describe_continuous_backups(TableName=restored)["ContinuousBackupsDescription"]
pitr = backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
ttl = dynamo.describe_time_to_live(TableName=restored)["TimeToLiveDescription"].get("AttributeName") == "ttl"
print(f"{'PASS' if pitr and ttl else 'FAIL'} dr: the restored table has point-in-time recovery and TTL on ttl")
sys.exit(0 if ok and pitr and ttl else 1)
PY

"$TOOLS_DIR/aws-venv/bin/python" - <<'PY'
import boto3

sqs = boto3.client("sqs")
dlq = sqs.get_queue_url(QueueName="agenticai-dev-dlq-dev")["QueueUrl"]
for n in range(3):
    sqs.send_message(QueueUrl=dlq, MessageBody=f'{{"message_id": "dead-{n}"}}',
                     MessageAttributes={"message_id": {"DataType": "String", "StringValue": f"dead-{n}"}})
PY
bash scripts/ops/dr-redrive-dlq.sh dev dev --copy
"$TOOLS_DIR/aws-venv/bin/python" - <<'PY'
import sys
import boto3

sqs = boto3.client("sqs")


def held(name):
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


queue, dlq = held("agenticai-dev-queue-dev"), held("agenticai-dev-dlq-dev")
ok = queue == 4 and dlq == 0
print(f"{'PASS' if ok else 'FAIL'} dr: the dev DLQ's 3 messages are back in the dev queue (queue {queue}, DLQ {dlq})")
sys.exit(0 if ok else 1)
PY

# The Redis Cluster's per-node alarms, as operators put them (moto's CloudFormation lacks
# ElastiCache: the replication group is made through the API): an alarm pair per node, and the pair
# of a node the cluster no longer has (left by an earlier run, before a shard was removed) deleted.
"$TOOLS_DIR/aws-venv/bin/python" - <<'PY'
import boto3

boto3.client("elasticache").create_replication_group(
    ReplicationGroupId="agenticai-citest", ReplicationGroupDescription="cfn-stack-test", Engine="valkey",
    CacheNodeType="cache.m7g.large", NumNodeGroups=3, ReplicasPerNodeGroup=2, AutomaticFailoverEnabled=True)
cloudwatch = boto3.client("cloudwatch")
for kind, metric in (("engine-cpu", "EngineCPUUtilization"), ("memory", "DatabaseMemoryUsagePercentage")):
    cloudwatch.put_metric_alarm(
        AlarmName=f"agenticai-websocket-dev-redis-agenticai-citest-0009-001-{kind}", Namespace="AWS/ElastiCache",
        MetricName=metric, Dimensions=[{"Name": "CacheClusterId", "Value": "agenticai-citest-0009-001"}],
        Statistic="Maximum", Period=60, EvaluationPeriods=5, Threshold=80, ComparisonOperator="GreaterThanThreshold")
PY
check_cluster_alarms() {
  "$TOOLS_DIR/aws-venv/bin/python" - "$1" <<'PY'
import sys
import boto3

label = sys.argv[1]
members = set(boto3.client("elasticache").describe_replication_groups(
    ReplicationGroupId="agenticai-citest")["ReplicationGroups"][0]["MemberClusters"])
alarms = boto3.client("cloudwatch").describe_alarms(AlarmNamePrefix="agenticai-websocket-dev-redis-")["MetricAlarms"]
expected = {(member, metric) for member in members for metric in ("EngineCPUUtilization", "DatabaseMemoryUsagePercentage")}
found = {
    ({d["Name"]: d["Value"] for d in alarm["Dimensions"]}["CacheClusterId"], alarm["MetricName"])
    for alarm in alarms
    if alarm["Namespace"] == "AWS/ElastiCache" and alarm["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:oncall"]
}
ok = found == expected and len(alarms) == len(expected)
print(f"{'PASS' if ok else 'FAIL'} redis-cluster-alarms, {label}: engine CPU and memory alarms on each of the "
      f"{len(members)} nodes, nothing else ({len(alarms)} alarms)")
sys.exit(0 if ok else 1)
PY
}
for run in "first run, a gone node's pair deleted" "second run, unchanged"; do
  bash scripts/ops/redis-cluster-alarms.sh dev --replication-group agenticai-citest --topic arn:aws:sns:us-east-1:123456789012:oncall
  check_cluster_alarms "$run"
done
