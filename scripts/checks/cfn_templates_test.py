"""The CloudFormation templates as each choice of parameters renders them, for
scripts/checks/cfn-stack-test.sh (moto's CloudFormation cannot create the service stack, nor the
ElastiCache half of the platform stack, so these are read from the templates with their conditions
resolved, and what CloudWatch can judge is sent to it).

  cfn_templates_test.py SERVER_LOG

SERVER_LOG is the log of a server run with EMF on: the dashboard and the alarms may read only
metrics it emitted. For each Redis choice (none, one node, a cluster) the service's dashboard is
rendered and put to CloudWatch (AWS_ENDPOINT_URL), and the task definition's environment and
secrets are checked: a cluster gives the tasks REDIS_CLUSTER=true and REDIS_URL from the platform's
secret (the configuration endpoint over TLS, with the AUTH token), which the execution role may
read. Both stacks are checked together: every platform export the service imports is an output of
the platform, and the cluster's pieces are what the engine needs (Valkey 7+ with cluster-enabled,
TLS, AUTH, automatic failover over availability zones).

Prints PASS/FAIL per check; exits 1 if any failed.
"""

import json
import re
import sys
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "cloudformation" / "platform.yaml"
SERVICE = ROOT / "cloudformation" / "service.yaml"
NO_VALUE = object()


class Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...) read as their long form."""


def _intrinsic(loader, suffix, node):
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}


Loader.add_multi_constructor("!", _intrinsic)


class Template:
    """A template with its parameters' defaults overridden: conditions, `Fn::If` and `AWS::NoValue`
    resolved; every other intrinsic (imports, `Fn::Sub`, attributes) left as written."""

    def __init__(self, path, **overrides):
        self.body = yaml.load(path.read_text(), Loader=Loader)
        self.parameters = {name: str(p.get("Default", "")) for name, p in self.body["Parameters"].items()}
        unknown = set(overrides) - set(self.parameters)
        if unknown:
            raise KeyError(f"{path.name} has no parameters {sorted(unknown)}")
        self.parameters.update(overrides)
        self.conditions = {}

    def value(self, node):
        if isinstance(node, dict) and len(node) == 1:
            (key, argument), = node.items()
            if key == "Ref" and argument in self.parameters:
                return self.parameters[argument]
            if key == "Ref" and argument == "AWS::NoValue":
                return NO_VALUE
            if key == "Fn::If":
                name, when_true, when_false = argument
                return self.value(when_true if self.condition(name) else when_false)
            if key == "Fn::Equals":
                left, right = (self.value(side) for side in argument)
                return left == right
            if key == "Fn::And":
                return all(self.value(part) for part in argument)
            if key == "Fn::Or":
                return any(self.value(part) for part in argument)
            if key == "Fn::Not":
                return not self.value(argument[0])
            if key == "Condition":
                return self.condition(argument)
        if isinstance(node, dict):
            resolved = {key: self.value(item) for key, item in node.items()}
            return {key: item for key, item in resolved.items() if item is not NO_VALUE}
        if isinstance(node, list):
            return [item for item in (self.value(entry) for entry in node) if item is not NO_VALUE]
        return node

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.body["Conditions"][name]))
        return self.conditions[name]

    def resources(self):
        """The resources this choice creates, resolved."""
        return {
            name: self.value(resource)
            for name, resource in self.body["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }

    def outputs(self):
        return {
            name: self.value(output)
            for name, output in self.body["Outputs"].items()
            if "Condition" not in output or self.condition(output["Condition"])
        }

    def refused_by_rules(self):
        """AssertDescriptions of the rules whose assertions fail for these parameters."""
        return [
            assertion["AssertDescription"]
            for rule in self.body.get("Rules", {}).values()
            for assertion in rule["Assertions"]
            if not self.value(assertion["Assert"])
        ]


def platform_import(name):
    """How the service stack writes an import of the platform's output `name`."""
    return {"Fn::ImportValue": {"Fn::Sub": f"${{PlatformStackName}}-{name}"}}


def emitted_metrics(log_path):
    emitted = set()
    for line in open(log_path, encoding="utf-8"):
        if line.startswith("{") and '"_aws"' in line:
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                emitted.update(metric["Name"] for metric in directive["Metrics"])
    return emitted


def dashboard(service):
    """The dashboard body as CloudWatch would get it, every other value a placeholder."""
    body, variables = service.resources()["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    values = {}
    for name, value in variables.items():
        if isinstance(value, str):
            values[name] = value
        elif "Fn::Sub" in value:
            text, _ = value["Fn::Sub"]
            values[name] = re.sub(r"\$\{([A-Za-z:]+)\}", "x", text)
        else:
            values[name] = "x"

    def substitute(match):
        name = match.group(1)
        if name == "EmfIntervalSecs":
            return "60"
        return values.get(name, "x")

    return json.loads(re.sub(r"\$\{([A-Za-z:]+)\}", substitute, body))


def container(service):
    return service.resources()["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]


def environment(service):
    return {entry["Name"]: entry["Value"] for entry in container(service)["Environment"]}


def secrets(service):
    return {entry["Name"]: entry["ValueFrom"] for entry in container(service)["Secrets"]}


def execution_role_reads(service):
    statements = service.resources()["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    return [statement["Resource"] for statement in statements if "secretsmanager:GetSecretValue" in statement["Action"]]


CHOICES = {
    "no Redis": {},
    "one node": {"EnableRedis": "true"},
    "a cluster": {"EnableRedisCluster": "true"},
}


class Report:
    def __init__(self):
        self.failures = 0
        self.passes = 0

    def check(self, ok, text):
        print(f"{'PASS' if ok else 'FAIL'} {text}")
        if ok:
            self.passes += 1
        else:
            self.failures += 1


def check_dashboards(report, log_path):
    emitted = emitted_metrics(log_path)
    cloudwatch = boto3.client("cloudwatch")
    for choice, overrides in CHOICES.items():
        service = Template(SERVICE, **overrides)
        body = dashboard(service)
        read = {
            row[1]
            for widget in body["widgets"]
            for row in widget["properties"].get("metrics", [])
            if row and row[0] == "AgenticAI/WebSocket"
        }
        read.update(
            resource["Properties"]["MetricName"]
            for resource in service.resources().values()
            if resource.get("Properties", {}).get("Namespace") == "AgenticAI/WebSocket"
        )
        missing = sorted(read - emitted)
        report.check(
            bool(read) and not missing,
            f"{choice}: the dashboard and alarms read {len(read)} EMF metrics, all emitted by the server"
            + (f" (never emitted: {missing})" if missing else ""),
        )
        name = "agenticai-websocket-citest-" + choice.replace(" ", "-")
        cloudwatch.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
        stored = json.loads(cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"])
        report.check(
            len(stored["widgets"]) == len(body["widgets"]),
            f"{choice}: the dashboard body is accepted ({len(body['widgets'])} widgets)",
        )
    cluster_widgets = [
        widget for widget in dashboard(Template(SERVICE, EnableRedisCluster="true"))["widgets"]
        if "Redis Cluster" in widget["properties"].get("title", "")
    ]
    per_node = all(
        "AWS/ElastiCache,CacheClusterId,CacheNodeId" in widget["properties"]["metrics"][0][0]["expression"]
        for widget in cluster_widgets
    )
    titles = " ".join(widget["properties"]["title"] for widget in cluster_widgets)
    report.check(
        per_node and "engine CPU per node" in titles and "memory used per node" in titles,
        f"a cluster: the dashboard shows engine CPU and memory per node ({len(cluster_widgets)} ElastiCache widgets)",
    )


def check_task_environment(report):
    none = Template(SERVICE)
    report.check(
        "REDIS_URL" not in environment(none) and "REDIS_URL" not in secrets(none)
        and "REDIS_CLUSTER" not in environment(none),
        "no Redis: the task has neither REDIS_URL nor REDIS_CLUSTER",
    )
    node = Template(SERVICE, EnableRedis="true")
    report.check(
        environment(node).get("REDIS_URL") == platform_import("RedisUrl")
        and "REDIS_CLUSTER" not in environment(node) and "REDIS_URL" not in secrets(node),
        "one node: REDIS_URL is the platform's RedisUrl, REDIS_CLUSTER unset",
    )
    cluster = Template(SERVICE, EnableRedisCluster="true")
    url_secret = platform_import("RedisClusterUrlSecretArn")
    report.check(
        environment(cluster).get("REDIS_CLUSTER") == "true"
        and secrets(cluster).get("REDIS_URL") == url_secret
        and "REDIS_URL" not in environment(cluster),
        "a cluster: REDIS_CLUSTER=true, REDIS_URL injected from the platform's RedisClusterUrlSecretArn, not an environment value",
    )
    report.check(
        url_secret in execution_role_reads(cluster) and url_secret not in execution_role_reads(node),
        "a cluster: the execution role may read the URL's secret (and only then)",
    )
    report.check(
        "RedisDownAlarm" in cluster.resources() and "RedisDownAlarm" in node.resources()
        and "RedisDownAlarm" not in none.resources(),
        "the redis-down alarm exists with either Redis, not without",
    )
    refusal = "Set EnableRedis or EnableRedisCluster, not both."
    both = Template(SERVICE, EnableRedis="true", EnableRedisCluster="true")
    report.check(
        refusal in both.refused_by_rules() and refusal not in cluster.refused_by_rules(),
        "EnableRedis and EnableRedisCluster together are refused by a rule",
    )


def check_platform_cluster(report):
    platform = Template(PLATFORM, EnableRedisCluster="true")
    resources = platform.resources()
    outputs = platform.outputs()
    imported = set(re.findall(r"\$\{PlatformStackName\}-([A-Za-z]+)", SERVICE.read_text()))
    every_output = set(Template(PLATFORM, EnableRedis="true", EnableRedisCluster="true").outputs())
    report.check(
        imported <= every_output,
        f"every platform export the service imports is a platform output ({len(imported)})"
        + (f" (missing: {sorted(imported - every_output)})" if not imported <= every_output else ""),
    )

    group = resources["RedisCluster"]["Properties"]
    parameters = resources["RedisClusterParameterGroup"]["Properties"]
    family = re.fullmatch(r"(valkey|redis)(\d+)(?:\.x)?", parameters["CacheParameterGroupFamily"])
    report.check(
        family is not None and int(family.group(2)) >= 7 and parameters["Properties"].get("cluster-enabled") == "yes"
        and group["CacheParameterGroupName"] == {"Ref": "RedisClusterParameterGroup"}
        and group["EngineVersion"].split(".")[0] == family.group(2),
        f"a cluster: {parameters['CacheParameterGroupFamily']} (sharded pub/sub needs 7+) with cluster-enabled yes, engine {group['EngineVersion']}",
    )
    report.check(
        group["NumNodeGroups"] == platform.parameters["RedisClusterShards"]
        and group["ReplicasPerNodeGroup"] == platform.parameters["RedisClusterReplicasPerShard"]
        and group["AutomaticFailoverEnabled"] is True and group["MultiAZEnabled"] is True
        and int(platform.body["Parameters"]["RedisClusterReplicasPerShard"]["MinValue"]) >= 1,
        "a cluster: shards and replicas per shard from the parameters, automatic failover and Multi-AZ (a replica at least)",
    )
    token = {"Fn::Sub": "{{resolve:secretsmanager:${RedisClusterAuthToken}}}"}
    report.check(
        group["TransitEncryptionEnabled"] is True and group["AtRestEncryptionEnabled"] is True
        and group.get("AuthToken") == token
        and resources["RedisClusterAuthToken"]["Properties"]["GenerateSecretString"].get("ExcludePunctuation") is True,
        "a cluster: TLS, encryption at rest, AUTH from Secrets Manager (alphanumeric, so it stands in a URL)",
    )
    url = resources["RedisClusterUrlSecret"]["Properties"]["SecretString"]["Fn::Sub"]
    report.check(
        url == "rediss://:{{resolve:secretsmanager:${RedisClusterAuthToken}}}@"
        "${RedisCluster.ConfigurationEndPoint.Address}:${RedisCluster.ConfigurationEndPoint.Port}"
        and outputs["RedisClusterUrlSecretArn"]["Value"] == {"Ref": "RedisClusterUrlSecret"},
        "a cluster: the exported REDIS_URL secret is rediss://:AUTH@ the configuration endpoint",
    )
    report.check(
        group["SecurityGroupIds"] == [{"Ref": "RedisSecurityGroup"}]
        and {"RedisSecurityGroup", "RedisIngressFromTasks", "TaskEgressToRedis", "RedisSubnetGroup"} <= set(resources)
        and "Redis" not in resources,
        "a cluster alone: the single node's security group rules and subnets, without the single node",
    )
    local = Template(PLATFORM, EnableRedis="true", EnableRedisCluster="true", LocalEmulator="true").resources()
    report.check(
        not any(resource["Type"].startswith("AWS::ElastiCache::") for resource in local.values()),
        "LocalEmulator=true leaves ElastiCache out whatever is asked (moto lacks it)",
    )


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    report = Report()
    check_dashboards(report, sys.argv[1])
    check_task_environment(report)
    check_platform_cluster(report)
    print(f"cfn-templates: {report.passes} passed, {report.failures} failed")
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
