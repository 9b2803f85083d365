#!/usr/bin/env bash
# Disaster recovery: moves the messages of an agent's dead-letter queue back to the agent queue,
# once the agent that failed on them is fixed.
#
#   scripts/ops/dr-redrive-dlq.sh ENV ROLE [--copy] [--max N] [--dry-run] [--region REGION]
#
#   ENV        dev | staging | prod
#   ROLE       pm | dev | qa | ops | updates   (agenticai-ROLE-dlq-ENV -> agenticai-ROLE-queue-ENV)
#   --copy     receive, send and delete here, 10 at a time, instead of SQS's own redrive
#              (StartMessageMoveTask, the default), which emulators such as moto lack; each message
#              is deleted from the DLQ only after the agent queue accepted it, so a failure midway
#              repeats messages rather than losing them (agents drop repeats by message_id)
#   --max N    with --copy, move at most N messages (default 100000)
#   --dry-run  print the commands instead of running them
#
# Works against any endpoint the AWS CLI is pointed at: AWS_ENDPOINT_URL (moto in the tests).
# docs/operations.md, "Redrive a dead-letter queue", says when.
set -euo pipefail

usage() {
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

ENV_NAME=""
ROLE=""
COPY=0
MAX=100000
DRY_RUN=0
REGION=${AWS_REGION:-us-east-1}
while [ $# -gt 0 ]; do
  case "$1" in
    --copy) COPY=1 ;;
    --max) MAX=${2:?--max needs a number}; shift ;;
    --dry-run) DRY_RUN=1 ;;
    --region) REGION=${2:?--region needs a value}; shift ;;
    -h | --help) usage ;;
    -*) echo "dr-redrive-dlq: unknown option $1" >&2; usage ;;
    *)
      if [ -z "$ENV_NAME" ]; then ENV_NAME=$1; elif [ -z "$ROLE" ]; then ROLE=$1; else usage; fi
      ;;
  esac
  shift
done
case "$ENV_NAME" in dev | staging | prod) ;; *) usage ;; esac
case "$ROLE" in pm | dev | qa | ops | updates) ;; *) usage ;; esac
case "$MAX" in '' | *[!0-9]*) usage ;; esac

# shellcheck source=lib/dry-run.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/dry-run.sh"

# The AWS CLI v1 ignores AWS_ENDPOINT_URL for SQS: name it explicitly.
aws() { command aws ${AWS_ENDPOINT_URL:+--endpoint-url "$AWS_ENDPOINT_URL"} --region "$REGION" "$@"; }

DLQ="agenticai-$ROLE-dlq-$ENV_NAME"
QUEUE="agenticai-$ROLE-queue-$ENV_NAME"
say "redrive $DLQ -> $QUEUE ($REGION)$([ "$DRY_RUN" -eq 1 ] && echo ' [dry run]')"
capture DLQ_URL "<DLQ_URL>" aws sqs get-queue-url --queue-name "$DLQ" --query QueueUrl --output text
capture QUEUE_URL "<QUEUE_URL>" aws sqs get-queue-url --queue-name "$QUEUE" --query QueueUrl --output text
capture WAITING "<N>" aws sqs get-queue-attributes --queue-url "$DLQ_URL" \
  --attribute-names ApproximateNumberOfMessages --query Attributes.ApproximateNumberOfMessages --output text
echo "$DLQ holds about $WAITING messages"

if [ "$COPY" -eq 0 ]; then
  capture DLQ_ARN "<DLQ_ARN>" aws sqs get-queue-attributes --queue-url "$DLQ_URL" --attribute-names QueueArn \
    --query Attributes.QueueArn --output text
  capture QUEUE_ARN "<QUEUE_ARN>" aws sqs get-queue-attributes --queue-url "$QUEUE_URL" --attribute-names QueueArn \
    --query Attributes.QueueArn --output text
  run aws sqs start-message-move-task --source-arn "$DLQ_ARN" --destination-arn "$QUEUE_ARN" --output text
  echo "move task started; follow it with: aws sqs list-message-move-tasks --source-arn $DLQ_ARN"
  exit 0
fi

if [ "$DRY_RUN" -eq 1 ]; then
  echo "+ repeat: aws sqs receive-message (10) -> aws sqs send-message-batch -> aws sqs delete-message-batch, until empty or $MAX"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
moved=0
while [ "$moved" -lt "$MAX" ]; do
  aws sqs receive-message --queue-url "$DLQ_URL" --max-number-of-messages 10 --wait-time-seconds 1 \
    --visibility-timeout 120 --attribute-names All --message-attribute-names All --output json >"$work/received.json"
  # Entries for the agent queue (body and message attributes as they were) and for the deletion.
  count=$(python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
text = open(f"{work}/received.json").read().strip()
messages = json.loads(text).get("Messages", []) if text else []
sends, deletes = [], []
for index, message in enumerate(messages):
    entry = {"Id": str(index), "MessageBody": message["Body"]}
    if message.get("MessageAttributes"):
        entry["MessageAttributes"] = message["MessageAttributes"]
    sends.append(entry)
    deletes.append({"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]})
json.dump(sends, open(f"{work}/send.json", "w"))
json.dump(deletes, open(f"{work}/delete.json", "w"))
print(len(messages))
PY
)
  [ "$count" -gt 0 ] || break
  aws sqs send-message-batch --queue-url "$QUEUE_URL" --entries "file://$work/send.json" --output json >"$work/sent.json"
  # Only what the agent queue accepted leaves the DLQ; the rest reappears after the visibility timeout.
  python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
sent = json.load(open(f"{work}/sent.json"))
accepted = {entry["Id"] for entry in sent.get("Successful", [])}
for failure in sent.get("Failed", []):
    print(f"dr-redrive-dlq: not moved ({failure.get('Code')}: {failure.get('Message')}); it stays in the DLQ", file=sys.stderr)
deletes = [entry for entry in json.load(open(f"{work}/delete.json")) if entry["Id"] in accepted]
json.dump(deletes, open(f"{work}/delete.json", "w"))
open(f"{work}/accepted", "w").write(str(len(deletes)))
PY
  accepted=$(cat "$work/accepted")
  if [ "$accepted" -gt 0 ]; then
    aws sqs delete-message-batch --queue-url "$DLQ_URL" --entries "file://$work/delete.json" --output json >/dev/null
  fi
  moved=$((moved + accepted))
  [ "$accepted" -eq "$count" ] || { echo "dr-redrive-dlq: the agent queue refused some messages; stopping" >&2; exit 1; }
done
echo "moved $moved messages from $DLQ to $QUEUE"
