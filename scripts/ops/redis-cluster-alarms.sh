#!/usr/bin/env bash
# Alarms on every node of the Redis Cluster (platform stack, EnableRedisCluster=true): a hot shard
# shows as one node's engine CPU or memory above the threshold. CloudFormation cannot make them:
# the nodes (<group>-<shard>-<node>, 0001-001, ...) follow RedisClusterShards, and a CloudWatch
# alarm cannot select metrics by a name's prefix. Run after creating the cluster and after every
# change of its shards or replicas: it puts an alarm pair per node and deletes those of nodes gone.
#
#   scripts/ops/redis-cluster-alarms.sh ENV [--cpu PERCENT] [--memory PERCENT] [--topic ARN]
#                                           [--replication-group ID] [--dry-run] [--region REGION]
#
#   ENV        dev | staging | prod
#   --cpu      EngineCPUUtilization (the engine's one thread) above this for 5 minutes (default 80)
#   --memory   DatabaseMemoryUsagePercentage above this for 5 minutes (default 80)
#   --topic    SNS topic notified (default: the service stack's AlarmTopicArn, none if it has none)
#   --replication-group  the cluster's id (default: the platform stack's RedisClusterReplicationGroupId)
#   --dry-run  print the commands instead of running them
#
# Environment: PLATFORM_STACK (agenticai-platform-ENV), SERVICE_STACK (agenticai-websocket-ENV),
# AWS_ENDPOINT_URL (moto in the tests). docs/deployment.md, "Redis: one node or a cluster", says
# what to do when one fires.
set -euo pipefail

usage() {
  sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

ENV_NAME=""
CPU_PERCENT=80
MEMORY_PERCENT=80
TOPIC=""
GROUP=""
DRY_RUN=0
REGION=${AWS_REGION:-us-east-1}
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU_PERCENT=${2:?--cpu needs a percentage}; shift ;;
    --memory) MEMORY_PERCENT=${2:?--memory needs a percentage}; shift ;;
    --topic) TOPIC=${2:?--topic needs an ARN}; shift ;;
    --replication-group) GROUP=${2:?--replication-group needs an id}; shift ;;
    --dry-run) DRY_RUN=1 ;;
    --region) REGION=${2:?--region needs a value}; shift ;;
    -h | --help) usage ;;
    -*) echo "redis-cluster-alarms: unknown option $1" >&2; usage ;;
    *) if [ -z "$ENV_NAME" ]; then ENV_NAME=$1; else usage; fi ;;
  esac
  shift
done
case "$ENV_NAME" in dev | staging | prod) ;; *) usage ;; esac
for percent in "$CPU_PERCENT" "$MEMORY_PERCENT"; do
  case "$percent" in '' | *[!0-9]*) usage ;; esac
done
PLATFORM_STACK=${PLATFORM_STACK:-agenticai-platform-$ENV_NAME}
SERVICE_STACK=${SERVICE_STACK:-agenticai-websocket-$ENV_NAME}

# shellcheck source=lib/dry-run.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/dry-run.sh"

aws() { command aws ${AWS_ENDPOINT_URL:+--endpoint-url "$AWS_ENDPOINT_URL"} --region "$REGION" "$@"; }

if [ -z "$GROUP" ]; then
  capture GROUP "<REPLICATION_GROUP_ID>" aws cloudformation describe-stacks --stack-name "$PLATFORM_STACK" \
    --query "Stacks[0].Outputs[?OutputKey=='RedisClusterReplicationGroupId'].OutputValue" --output text
  case "$GROUP" in '' | None)
    echo "redis-cluster-alarms: $PLATFORM_STACK has no RedisClusterReplicationGroupId (EnableRedisCluster=true?)" >&2
    exit 1 ;;
  esac
fi
if [ -z "$TOPIC" ]; then
  capture TOPIC "<ALARM_TOPIC_ARN>" aws cloudformation describe-stacks --stack-name "$SERVICE_STACK" \
    --query "Stacks[0].Parameters[?ParameterKey=='AlarmTopicArn'].ParameterValue" --output text
  [ "$TOPIC" = None ] && TOPIC=""
fi
actions=()
[ -n "$TOPIC" ] && actions=(--alarm-actions "$TOPIC" --ok-actions "$TOPIC")

say "alarms on the nodes of $GROUP ($REGION)$([ "$DRY_RUN" -eq 1 ] && echo ' [dry run]')"
capture MEMBERS "$GROUP-0001-001 $GROUP-0001-002" aws elasticache describe-replication-groups \
  --replication-group-id "$GROUP" --query 'ReplicationGroups[0].MemberClusters' --output text
# Each node once (AWS lists each once already; moto repeats them across shards).
read -r -a nodes <<<"$(tr -s '[:blank:]' '\n' <<<"$MEMBERS" | sort -u | tr '\n' ' ')"
if [ "${#nodes[@]}" -eq 0 ]; then
  echo "redis-cluster-alarms: $GROUP has no nodes" >&2
  exit 1
fi

PREFIX="agenticai-websocket-$ENV_NAME-redis-"
# put_alarm NODE KIND METRIC PERCENT WHAT
put_alarm() {
  run aws cloudwatch put-metric-alarm --alarm-name "$PREFIX$1-$2" \
    --alarm-description "$5 on $1 (a shard of $GROUP): a hot project on its shard, or the cluster needs more shards (docs/deployment.md, Redis: one node or a cluster)." \
    --namespace AWS/ElastiCache --metric-name "$3" \
    --dimensions "Name=CacheClusterId,Value=$1" Name=CacheNodeId,Value=0001 \
    --statistic Maximum --period 60 --evaluation-periods 5 --threshold "$4" \
    --comparison-operator GreaterThanThreshold --treat-missing-data missing "${actions[@]}"
}
for node in "${nodes[@]}"; do
  put_alarm "$node" engine-cpu EngineCPUUtilization "$CPU_PERCENT" "Engine CPU above $CPU_PERCENT % for 5 minutes"
  put_alarm "$node" memory DatabaseMemoryUsagePercentage "$MEMORY_PERCENT" "Memory above $MEMORY_PERCENT % of maxmemory for 5 minutes"
done
echo "${#nodes[@]} nodes, $((2 * ${#nodes[@]})) alarms ($PREFIX<node>-engine-cpu, -memory)"

# Alarms of nodes the cluster no longer has (fewer shards or replicas) would stay without data.
capture EXISTING "" aws cloudwatch describe-alarms --alarm-name-prefix "$PREFIX$GROUP-" \
  --query 'MetricAlarms[].AlarmName' --output text
stale=()
for alarm in $EXISTING; do
  node=${alarm#"$PREFIX"}
  node=${node%-engine-cpu}
  node=${node%-memory}
  case " ${nodes[*]} " in *" $node "*) ;; *) stale+=("$alarm") ;; esac
done
if [ "${#stale[@]}" -gt 0 ]; then
  run aws cloudwatch delete-alarms --alarm-names "${stale[@]}"
  echo "deleted ${#stale[@]} alarms of nodes gone: ${stale[*]}"
fi
