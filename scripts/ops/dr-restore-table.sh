#!/usr/bin/env bash
# Disaster recovery: restores the records table to a point in time, into a NEW table (DynamoDB
# never restores over an existing one), gives it what a restore does not carry (point-in-time
# recovery, TTL on `ttl`), and optionally switches the service to it.
#
#   scripts/ops/dr-restore-table.sh ENV (--latest | --at TIME) [--target NAME] [--source NAME]
#                               [--switch] [--dry-run] [--region REGION]
#
#   ENV          dev | staging | prod (source table agenticai-websocket-ENV)
#   --latest     the latest restorable time (a few minutes ago)
#   --at TIME    an ISO 8601 time (2026-12-04T09:30:00Z) or unix seconds, within the last 35 days
#   --target     name of the new table (default agenticai-websocket-ENV-restored-YYYYMMDDHHMM)
#   --source     another source table than agenticai-websocket-ENV
#   --switch     then point the service at the new table: updates the service stack
#                (SERVICE_STACK, default agenticai-websocket-ENV) with RecordsTableName=TARGET, its
#                deployed template and every other parameter unchanged, and waits until the service
#                is stable (a stack deployed before RecordsTableName existed: deploy it first)
#   --dry-run    print every command instead of running it
#
# Works against any endpoint the AWS CLI is pointed at: AWS_ENDPOINT_URL (moto in the tests).
# Prints "restored TARGET" and the restored table's item count on success. docs/operations.md,
# "Restore the records table", says when and how.
set -euo pipefail

usage() {
  sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

ENV_NAME=""
WHEN=""
TARGET=""
SOURCE=""
SWITCH=0
DRY_RUN=0
REGION=${AWS_REGION:-us-east-1}
while [ $# -gt 0 ]; do
  case "$1" in
    --latest) WHEN=latest ;;
    --at) WHEN=${2:?--at needs a time}; shift ;;
    --target) TARGET=${2:?--target needs a name}; shift ;;
    --source) SOURCE=${2:?--source needs a name}; shift ;;
    --switch) SWITCH=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --region) REGION=${2:?--region needs a value}; shift ;;
    -h | --help) usage ;;
    -*) echo "dr-restore-table: unknown option $1" >&2; usage ;;
    *) [ -z "$ENV_NAME" ] || usage; ENV_NAME=$1 ;;
  esac
  shift
done
case "$ENV_NAME" in dev | staging | prod) ;; *) usage ;; esac
[ -n "$WHEN" ] || usage

SOURCE=${SOURCE:-agenticai-websocket-$ENV_NAME}
TARGET=${TARGET:-$SOURCE-restored-$(date -u +%Y%m%d%H%M)}
SERVICE_STACK=${SERVICE_STACK:-agenticai-websocket-$ENV_NAME}
CLUSTER="agenticai-cluster-$ENV_NAME"
SERVICE="agenticai-websocket-$ENV_NAME"

# shellcheck source=lib/dry-run.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/dry-run.sh"

# The AWS CLI v1 ignores AWS_ENDPOINT_URL for some services: name it explicitly.
aws() { command aws ${AWS_ENDPOINT_URL:+--endpoint-url "$AWS_ENDPOINT_URL"} --region "$REGION" "$@"; }

say "restore $SOURCE into $TARGET ($REGION)$([ "$DRY_RUN" -eq 1 ] && echo ' [dry run]')"
capture WINDOW "<EARLIEST> <LATEST>" aws dynamodb describe-continuous-backups --table-name "$SOURCE" \
  --query 'ContinuousBackupsDescription.PointInTimeRecoveryDescription.[EarliestRestorableDateTime,LatestRestorableDateTime]' \
  --output text
echo "restorable window (unix seconds): $WINDOW"
if [ "$WINDOW" = "None	None" ] || [ "$WINDOW" = "None None" ]; then
  echo "dr-restore-table: point-in-time recovery is not enabled on $SOURCE" >&2
  exit 1
fi

if [ "$WHEN" = latest ]; then
  when_args=(--use-latest-restorable-time)
else
  case "$WHEN" in
    *[!0-9]*) when_seconds=$(date -u -d "$WHEN" +%s) || { echo "dr-restore-table: --at $WHEN is not a time" >&2; exit 2; } ;;
    *) when_seconds=$WHEN ;;
  esac
  when_args=(--restore-date-time "$when_seconds")
fi
run aws dynamodb restore-table-to-point-in-time --source-table-name "$SOURCE" --target-table-name "$TARGET" \
  "${when_args[@]}" --query 'TableDescription.TableStatus' --output text

say "wait until $TARGET is ACTIVE (large tables take hours)"
run aws dynamodb wait table-exists --table-name "$TARGET"

# A restored table has neither point-in-time recovery nor TTL: give it the platform table's.
say "enable point-in-time recovery and TTL on $TARGET"
run aws dynamodb update-continuous-backups --table-name "$TARGET" \
  --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true \
  --query 'ContinuousBackupsDescription.PointInTimeRecoveryDescription.PointInTimeRecoveryStatus' --output text
run aws dynamodb update-time-to-live --table-name "$TARGET" \
  --time-to-live-specification Enabled=true,AttributeName=ttl --query 'TimeToLiveSpecification.Enabled' --output text

capture COUNT "<ITEMS>" aws dynamodb scan --table-name "$TARGET" --select COUNT --query Count --output text
echo "restored $TARGET ($COUNT items)"

if [ "$SWITCH" -eq 1 ]; then
  # Only the table changes: the deployed template, every other parameter as it is. The task role's
  # table permission follows the name.
  say "switch the service to $TARGET (stack $SERVICE_STACK, RecordsTableName)"
  capture KEYS "<PARAMETER_KEYS>" aws cloudformation describe-stacks --stack-name "$SERVICE_STACK" \
    --query 'Stacks[0].Parameters[].ParameterKey' --output text
  parameters=("ParameterKey=RecordsTableName,ParameterValue=$TARGET")
  for key in $KEYS; do
    [ "$key" = RecordsTableName ] || parameters+=("ParameterKey=$key,UsePreviousValue=true")
  done
  run aws cloudformation update-stack --stack-name "$SERVICE_STACK" --use-previous-template \
    --parameters "${parameters[@]}" --capabilities CAPABILITY_NAMED_IAM --query StackId --output text
  run aws cloudformation wait stack-update-complete --stack-name "$SERVICE_STACK"
  say "wait until the service is stable"
  run aws ecs wait services-stable --cluster "$CLUSTER" --services "$SERVICE"
  echo "the service now records into $TARGET; the old table $SOURCE is kept (DeletionPolicy Retain)"
fi
