#!/usr/bin/env bash
# scripts/ops/deploy.sh against stand-ins for `aws` and `docker` (no AWS account, no Docker
# engine): each stand-in logs its command line and answers as the real one would. Checks:
#   - ECR's scan of the pushed image with a CRITICAL or a HIGH finding: deploy.sh exits 1 and
#     says why, and the service is never touched (no task definition registered, no update-service)
#   - MEDIUM and LOW findings only, or none: the new task definition is registered and the
#     service updated to it, after the wait for the scan
#   - --dry-run: prints the scan's wait and read before the service update, touches nothing
#   - the image is built with the revision as GIT_COMMIT (what agenticai_ws_build_info reports)
#
#   scripts/checks/deploy-test.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bin"
export CALLS="$WORK/calls.log"

# The stand-ins. SCAN_COUNTS is what describe-image-scan-findings answers (its
# findingSeverityCounts; "null" when the scan found nothing).
cat >"$WORK/bin/aws" <<'AWS'
#!/usr/bin/env bash
echo "aws $*" >>"$CALLS"
case "$1 $2 $*" in
  "cloudformation describe-stacks "*EcrRepositoryUri*) echo "123456789012.dkr.ecr.us-east-1.amazonaws.com/agenticai-websocket-dev" ;;
  "cloudformation describe-stacks "*ServiceUrl*) echo "wss://gateway.example/ws" ;;
  "ecr wait "*) ;;
  "ecr describe-image-scan-findings "*) echo "$SCAN_COUNTS" ;;
  "ecs describe-services "*) echo "arn:aws:ecs:us-east-1:123456789012:task-definition/agenticai-websocket-dev:7" ;;
  "ecs describe-task-definition "*)
    echo '{"family":"agenticai-websocket-dev","status":"ACTIVE","containerDefinitions":[{"name":"agenticai-websocket","image":"old"}]}' ;;
  "ecs register-task-definition "*) echo "arn:aws:ecs:us-east-1:123456789012:task-definition/agenticai-websocket-dev:8" ;;
  "ecs update-service "* | "ecs wait "*) ;;
  *) echo "aws stand-in: unexpected command: $*" >&2; exit 99 ;;
esac
AWS
cat >"$WORK/bin/docker" <<'DOCKER'
#!/usr/bin/env bash
echo "docker $*" >>"$CALLS"
DOCKER
chmod +x "$WORK/bin/aws" "$WORK/bin/docker"

passed=0
failed=0
case_failures=0
fail() {
  echo "FAIL $*" >&2
  case_failures=$((case_failures + 1))
}
# case_done NAME: counts the case, passed if nothing failed since the last one.
case_done() {
  if [ "$case_failures" -eq 0 ]; then
    echo "ok   $*"
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
  case_failures=0
}

# deploy CASE EXPECTED_EXIT [ARGS...]: runs deploy.sh dev with the stand-ins, output in $WORK/CASE.out.
deploy() {
  local name=$1 expected=$2 status=0
  shift 2
  : >"$CALLS"
  PATH="$WORK/bin:$PATH" SKIP_ECR_LOGIN=1 AWS_REGION=us-east-1 \
    bash scripts/ops/deploy.sh dev "$@" >"$WORK/$name.out" 2>&1 || status=$?
  if [ "$status" -ne "$expected" ]; then
    fail "$name: exit $status, expected $expected"
    sed 's/^/    /' "$WORK/$name.out" >&2
  fi
}

for counts in '{"HIGH": 2, "LOW": 5}' '{"CRITICAL": 1}'; do
  SCAN_COUNTS=$counts deploy refused 1
  grep -q "deploy: refused: .* has critical or high findings" "$WORK/refused.out" \
    || fail "findings $counts: no refusal message"
  grep -q "aws ecr wait image-scan-complete" "$CALLS" || fail "findings $counts: the scan was not waited for"
  if grep -qE "aws ecs (register-task-definition|update-service)" "$CALLS"; then
    fail "findings $counts: the service was touched"
  fi
  case_done "findings $counts: refused, service untouched"
done

for counts in '{"MEDIUM": 3, "LOW": 1}' null; do
  SCAN_COUNTS=$counts deploy accepted 0
  grep -q "aws ecs update-service .*task-definition/agenticai-websocket-dev:8" "$CALLS" \
    || fail "findings $counts: the service was not updated to the new revision"
  grep -q -- "--build-arg GIT_COMMIT=" "$CALLS" || fail "findings $counts: no GIT_COMMIT build argument"
  case_done "findings $counts: deployed"
done

SCAN_COUNTS='{"CRITICAL": 9}' deploy dry-run 0 --dry-run
[ -s "$CALLS" ] && fail "dry run: ran $(head -n 1 "$CALLS")"
scan_line=$(grep -n "aws ecr describe-image-scan-findings" "$WORK/dry-run.out" | cut -d: -f1 | head -n 1)
update_line=$(grep -n "aws ecs update-service" "$WORK/dry-run.out" | cut -d: -f1 | head -n 1)
if [ -z "$scan_line" ] || [ -z "$update_line" ] || [ "$scan_line" -gt "$update_line" ]; then
  fail "dry run: the scan's findings are not read before the service update"
fi
case_done "dry run: prints the scan's wait and read before the update, runs nothing"

echo "deploy-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
