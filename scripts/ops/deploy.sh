#!/usr/bin/env bash
# Deploys the gateway to ECS Fargate.
#
#   scripts/ops/deploy.sh ENV [--dry-run] [--infra] [--region REGION]
#
#   ENV        dev | staging | prod
#   --dry-run  print every command instead of running it (needs no AWS access, no docker: values
#              that would come from AWS are shown as <PLACEHOLDERS>)
#   --infra    also create/update the CloudFormation stacks: the platform stack before the image
#              push, then the service stack with the new image tag (which registers the task
#              definition revision and updates the service itself)
#
# Steps: ECR login, docker build, tag (timestamp, git revision, IMAGE_VERSION if set, latest), push,
# wait for ECR's scan of the image and stop on any critical or high finding, register a new
# revision of the service's current task definition with the new image, update the service, wait
# until it is stable, print the endpoint.
#
# Environment: AWS_REGION (us-east-1), PLATFORM_STACK (agenticai-platform-ENV), SERVICE_STACK
# (agenticai-websocket-ENV), IMAGE_VERSION (extra tag, e.g. the release tag v1.2.3), SKIP_ECR_LOGIN=1
# (already logged in, e.g. by aws-actions/amazon-ecr-login), plus the usual AWS credential variables.
# With --infra, the service stack's connection authentication: JWT_SECRET_ARN (Secrets Manager ARN
# of the token secret) or JWT_JWKS_URL, optional JWT_ISSUER, JWT_AUDIENCE, ALLOWED_ORIGINS, or
# ALLOW_ANONYMOUS=true on purpose; the stack refuses to start with none of them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

usage() {
  sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

ENV_NAME=""
DRY_RUN=0
INFRA=0
REGION=${AWS_REGION:-us-east-1}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --infra) INFRA=1 ;;
    --region) REGION=${2:?--region needs a value}; shift ;;
    -h | --help) usage ;;
    -*) echo "deploy: unknown option $1" >&2; usage ;;
    *)
      [ -z "$ENV_NAME" ] || usage
      ENV_NAME=$1
      ;;
  esac
  shift
done
case "$ENV_NAME" in
  dev | staging | prod) ;;
  *) echo "deploy: ENV must be dev, staging or prod" >&2; usage ;;
esac

PLATFORM_STACK=${PLATFORM_STACK:-agenticai-platform-$ENV_NAME}
SERVICE_STACK=${SERVICE_STACK:-agenticai-websocket-$ENV_NAME}
CLUSTER="agenticai-cluster-$ENV_NAME"
SERVICE="agenticai-websocket-$ENV_NAME"
FAMILY="agenticai-websocket-$ENV_NAME"
TIMESTAMP=$(date -u +%Y%m%d%H%M%S)
GIT_REV=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# shellcheck source=lib/dry-run.sh
source scripts/ops/lib/dry-run.sh

say "deploy $SERVICE to $CLUSTER in $REGION (revision $GIT_REV, tag $TIMESTAMP)$([ "$DRY_RUN" -eq 1 ] && echo ' [dry run]')"

if [ "$INFRA" -eq 1 ]; then
  say "platform stack $PLATFORM_STACK"
  run aws cloudformation deploy --region "$REGION" --stack-name "$PLATFORM_STACK" \
    --template-file cloudformation/platform.yaml \
    --parameter-overrides "EnvironmentName=$ENV_NAME" \
    --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset
fi

say "image"
capture REPOSITORY_URI "<ACCOUNT_ID>.dkr.ecr.$REGION.amazonaws.com/agenticai-websocket-$ENV_NAME" \
  aws cloudformation describe-stacks --region "$REGION" --stack-name "$PLATFORM_STACK" \
  --query "Stacks[0].Outputs[?OutputKey=='EcrRepositoryUri'].OutputValue" --output text
if [ -z "$REPOSITORY_URI" ] || [ "$REPOSITORY_URI" = None ]; then
  echo "deploy: no EcrRepositoryUri output on stack $PLATFORM_STACK (deploy it first: --infra)" >&2
  exit 1
fi
REGISTRY=${REPOSITORY_URI%%/*}
TAGS=("$TIMESTAMP" "git-$GIT_REV")
[ -n "${IMAGE_VERSION:-}" ] && TAGS+=("$IMAGE_VERSION")
TAGS+=(latest)
IMAGE="$REPOSITORY_URI:$TIMESTAMP"

if [ "${SKIP_ECR_LOGIN:-0}" != 1 ]; then
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '+ aws ecr get-login-password --region %q | docker login --username AWS --password-stdin %q\n' "$REGION" "$REGISTRY"
  else
    aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin "$REGISTRY"
  fi
fi

tag_args=()
for tag in "${TAGS[@]}"; do
  tag_args+=(-t "$REPOSITORY_URI:$tag")
done
run docker build --pull --platform linux/amd64 \
  --label "org.opencontainers.image.revision=$GIT_REV" \
  --label "org.opencontainers.image.created=$TIMESTAMP" \
  --build-arg "GIT_COMMIT=$GIT_REV" \
  "${tag_args[@]}" .
for tag in "${TAGS[@]}"; do
  run docker push "$REPOSITORY_URI:$tag"
done

# The repository scans every pushed image (ScanOnPush, cloudformation/platform.yaml): nothing
# runs an image with a critical or high finding. A refused image stays in ECR, unused; the
# service keeps its task definition.
say "image scan: no critical or high finding"
scan_target=(--region "$REGION" --repository-name "${REPOSITORY_URI#*/}" --image-id "imageTag=$TIMESTAMP")
run aws ecr wait image-scan-complete "${scan_target[@]}"
capture SCAN_COUNTS '{}' aws ecr describe-image-scan-findings "${scan_target[@]}" \
  --query 'imageScanFindings.findingSeverityCounts' --output json
if ! python3 - "$SCAN_COUNTS" <<'PY'
import json
import sys

counts = json.loads(sys.argv[1]) or {}
blocking = {severity: counts.get(severity, 0) for severity in ("CRITICAL", "HIGH")}
print("findings by severity:", json.dumps(counts, sort_keys=True) if counts else "none")
sys.exit(1 if any(blocking.values()) else 0)
PY
then
  echo "deploy: refused: $IMAGE has critical or high findings (aws ecr describe-image-scan-findings ${scan_target[*]})" >&2
  exit 1
fi

if [ "$INFRA" -eq 1 ]; then
  # CloudFormation registers the task definition revision and updates the service, waiting for
  # the deployment (circuit breaker with rollback) to finish.
  say "service stack $SERVICE_STACK (ImageTag=$TIMESTAMP)"
  auth_params=()
  for pair in "JwtSecretArn=${JWT_SECRET_ARN:-}" "JwtJwksUrl=${JWT_JWKS_URL:-}" "JwtIssuer=${JWT_ISSUER:-}" \
    "JwtAudience=${JWT_AUDIENCE:-}" "AllowedOrigins=${ALLOWED_ORIGINS:-}" "AllowAnonymous=${ALLOW_ANONYMOUS:-false}"; do
    [ -n "${pair#*=}" ] && auth_params+=("$pair")
  done
  run aws cloudformation deploy --region "$REGION" --stack-name "$SERVICE_STACK" \
    --template-file cloudformation/service.yaml \
    --parameter-overrides "EnvironmentName=$ENV_NAME" "PlatformStackName=$PLATFORM_STACK" "ImageTag=$TIMESTAMP" \
    "${auth_params[@]}" \
    --capabilities CAPABILITY_NAMED_IAM --no-fail-on-empty-changeset
else
  say "task definition revision"
  capture CURRENT_TASK_DEF "arn:aws:ecs:$REGION:<ACCOUNT_ID>:task-definition/$FAMILY:<CURRENT_REVISION>" \
    aws ecs describe-services --region "$REGION" --cluster "$CLUSTER" --services "$SERVICE" \
    --query 'services[0].taskDefinition' --output text
  if [ -z "$CURRENT_TASK_DEF" ] || [ "$CURRENT_TASK_DEF" = None ]; then
    echo "deploy: service $SERVICE not found in $CLUSTER (first deployment: use --infra)" >&2
    exit 1
  fi
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '+ aws ecs describe-task-definition --region %q --task-definition %q --query taskDefinition --output json > current.json\n' \
      "$REGION" "$CURRENT_TASK_DEF"
    echo "+ python3 (keep the registrable fields of current.json, set the agenticai-websocket image to $IMAGE) > task-definition.json"
  else
    aws ecs describe-task-definition --region "$REGION" --task-definition "$CURRENT_TASK_DEF" \
      --query taskDefinition --output json >"$WORK/current.json"
    python3 - "$WORK/current.json" "$IMAGE" >"$WORK/task-definition.json" <<'PY'
import json
import sys

current = json.load(open(sys.argv[1], encoding="utf-8"))
registrable = {
    "family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions", "volumes",
    "placementConstraints", "requiresCompatibilities", "cpu", "memory", "pidMode", "ipcMode",
    "proxyConfiguration", "inferenceAccelerators", "ephemeralStorage", "runtimePlatform",
}
new = {k: v for k, v in current.items() if k in registrable}
for container in new["containerDefinitions"]:
    if container["name"] == "agenticai-websocket":
        container["image"] = sys.argv[2]
json.dump(new, sys.stdout, indent=2)
PY
  fi
  capture NEW_TASK_DEF "arn:aws:ecs:$REGION:<ACCOUNT_ID>:task-definition/$FAMILY:<NEW_REVISION>" \
    aws ecs register-task-definition --region "$REGION" --cli-input-json "file://$WORK/task-definition.json" \
    --query taskDefinition.taskDefinitionArn --output text
  echo "registered $NEW_TASK_DEF (previous: $CURRENT_TASK_DEF)"

  update_service_and_wait "$NEW_TASK_DEF"
fi

say "endpoint"
capture ENDPOINT "<SERVICE_URL>" \
  aws cloudformation describe-stacks --region "$REGION" --stack-name "$SERVICE_STACK" \
  --query "Stacks[0].Outputs[?OutputKey=='ServiceUrl'].OutputValue" --output text
echo "deployed $IMAGE to $SERVICE"
echo "endpoint: $ENDPOINT"
echo "check:    python3 scripts/checks/integration_test.py $ENDPOINT"
echo "rollback: scripts/ops/rollback.sh $ENV_NAME"
