# shellcheck shell=bash
# Helpers shared by deploy.sh and rollback.sh; both set DRY_RUN (0 or 1), REGION, CLUSTER and
# SERVICE before calling them.

say() { printf '\n==> %s\n' "$*"; }

# run CMD...: runs it, or prints it (shell-quoted) under --dry-run.
run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# capture VAR PLACEHOLDER CMD...: VAR=$(CMD...), or VAR=PLACEHOLDER after printing CMD under --dry-run.
capture() {
  local __var=$1 __placeholder=$2
  shift 2
  if [ "$DRY_RUN" -eq 1 ]; then
    # shellcheck disable=SC2016 # a literal $( is printed
    printf '+ %s=$(' "$__var"
    printf '%q ' "$@"
    printf ')\n'
    printf -v "$__var" '%s' "$__placeholder"
  else
    printf -v "$__var" '%s' "$("$@")"
  fi
}

# update_service_and_wait TASK_DEFINITION: points the service at it and waits until it is stable.
update_service_and_wait() {
  say "update service"
  run aws ecs update-service --region "$REGION" --cluster "$CLUSTER" --service "$SERVICE" \
    --task-definition "$1" --query 'service.deployments[0].id' --output text
  say "wait until stable"
  run aws ecs wait services-stable --region "$REGION" --cluster "$CLUSTER" --services "$SERVICE"
}
