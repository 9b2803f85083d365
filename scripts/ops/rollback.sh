#!/usr/bin/env bash
# Rolls the service back to an earlier task definition revision and waits until it is stable.
#
#   scripts/ops/rollback.sh ENV [REVISION] [--dry-run] [--region REGION]
#
#   ENV        dev | staging | prod
#   REVISION   revision number (42), family:revision (agenticai-websocket-prod:42) or a task
#              definition ARN; default: the newest ACTIVE revision older than the one running now
#   --dry-run  print every command instead of running it (no AWS access needed; values that would
#              come from AWS are shown as <PLACEHOLDERS>)
#
# Equivalent to the checklist's
#   aws ecs update-service --cluster agenticai-cluster-ENV --service agenticai-websocket-ENV \
#     --task-definition agenticai-websocket-ENV:PREVIOUS_VERSION
# The image of every revision stays in ECR (lifecycle keeps the last 20 images by default).
set -euo pipefail

usage() {
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

ENV_NAME=""
REVISION=""
DRY_RUN=0
REGION=${AWS_REGION:-us-east-1}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --region) REGION=${2:?--region needs a value}; shift ;;
    -h | --help) usage ;;
    -*) echo "rollback: unknown option $1" >&2; usage ;;
    *)
      if [ -z "$ENV_NAME" ]; then
        ENV_NAME=$1
      elif [ -z "$REVISION" ]; then
        REVISION=$1
      else
        usage
      fi
      ;;
  esac
  shift
done
case "$ENV_NAME" in
  dev | staging | prod) ;;
  *) echo "rollback: ENV must be dev, staging or prod" >&2; usage ;;
esac

case "$REVISION" in
  "" | arn:* | *:*) ;;
  *[!0-9]*) echo "rollback: REVISION must be a number, family:revision or an ARN" >&2; exit 2 ;;
esac

CLUSTER="agenticai-cluster-$ENV_NAME"
SERVICE="agenticai-websocket-$ENV_NAME"
FAMILY="agenticai-websocket-$ENV_NAME"

# shellcheck source=lib/dry-run.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/dry-run.sh"

say "rollback $SERVICE in $CLUSTER ($REGION)$([ "$DRY_RUN" -eq 1 ] && echo ' [dry run]')"
capture CURRENT "arn:aws:ecs:$REGION:<ACCOUNT_ID>:task-definition/$FAMILY:<CURRENT_REVISION>" \
  aws ecs describe-services --region "$REGION" --cluster "$CLUSTER" --services "$SERVICE" \
  --query 'services[0].taskDefinition' --output text
if [ -z "$CURRENT" ] || [ "$CURRENT" = None ]; then
  echo "rollback: service $SERVICE not found in $CLUSTER" >&2
  exit 1
fi
echo "running now: $CURRENT"

REVISIONS=""
case "$REVISION" in
  "")
    # The newest ACTIVE revision of the family below the current one.
    capture REVISIONS "<ACTIVE_REVISION_ARNS>" \
      aws ecs list-task-definitions --region "$REGION" --family-prefix "$FAMILY" --status ACTIVE \
      --sort DESC --query 'taskDefinitionArns' --output text
    if [ "$DRY_RUN" -eq 1 ]; then
      TARGET="$FAMILY:<PREVIOUS_REVISION>"
      echo "+ TARGET=<newest of those revisions below ${CURRENT##*:}>"
    else
      current_number=${CURRENT##*:}
      TARGET=""
      for arn in $REVISIONS; do
        if [ "${arn##*:}" -lt "$current_number" ]; then
          TARGET=$arn
          break
        fi
      done
      if [ -z "$TARGET" ]; then
        echo "rollback: no ACTIVE revision of $FAMILY older than $current_number" >&2
        exit 1
      fi
    fi
    ;;
  arn:*) TARGET=$REVISION ;;
  *:*) TARGET=$REVISION ;;
  *) TARGET="$FAMILY:$REVISION" ;;
esac

capture TARGET_IMAGE "<IMAGE_OF_${TARGET##*:}>" \
  aws ecs describe-task-definition --region "$REGION" --task-definition "$TARGET" \
  --query 'taskDefinition.containerDefinitions[0].image' --output text
echo "rolling back to: $TARGET ($TARGET_IMAGE)"

update_service_and_wait "$TARGET"
echo "rolled back $SERVICE from $CURRENT to $TARGET"
echo "note: the service stack still names its own task definition; pass ImageTag=<the tag of $TARGET_IMAGE> on its next update (docs/deployment.md)"
