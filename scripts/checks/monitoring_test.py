"""The monitoring kit against a live gateway, for scripts/checks/monitoring-test.sh.

  monitoring_test.py compose SCHEMA              docker-compose.yml against the compose-spec schema,
                                                 and every file it mounts exists
  monitoring_test.py prometheus-config TARGET OUT  monitoring/prometheus/prometheus.yml with the
                                                 gateway at TARGET and a 1 s scrape, written to OUT
  monitoring_test.py traffic BASE_URL API_KEY    one WebSocket session that moves every series the
                                                 kit reads (a forward to SQS included), one publish
  monitoring_test.py check BASE_URL PROMETHEUS_URL  the target is up, and every expression of the
                                                 dashboard and the alert rules evaluates without
                                                 error and names only metrics the gateway exports

Exits 1 with the reason on the first failure.
"""

import asyncio
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import jsonschema
import websockets
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "monitoring/prometheus/prometheus.yml"
ALERT_RULES = ROOT / "monitoring/prometheus/alerts.yml"
DASHBOARD = ROOT / "monitoring/grafana/dashboards/agenticai-websocket.json"
JOB = "agenticai-websocket"
# Grafana's own variables, as Grafana would fill them in for a one-hour view.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# PromQL words that are neither metrics nor functions.
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
}
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = {"up"}


def fail(message):
    sys.exit(f"monitoring-test: {message}")


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def compose(schema_path):
    """The compose file validates against the schema, and what it mounts from the repository is there."""
    schema = json.loads(Path(schema_path).read_text(encoding="utf-8"))
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(document))
    if errors:
        fail("docker-compose.yml does not follow the compose specification:\n" + "\n".join(
            f"  {'/'.join(map(str, error.absolute_path))}: {error.message}" for error in errors))
    for name, service in document["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith(".") and not (ROOT / source).exists():
                fail(f"service {name} mounts {source}, which is not in the repository")
        build = service.get("build")
        if build and not (ROOT / build["context"] / "Dockerfile").exists():
            fail(f"service {name} builds from {build['context']}, which has no Dockerfile")
    print(f"docker-compose.yml: valid, {len(document['services'])} services, every mounted path present")


def prometheus_config(target, out):
    """The compose file's Prometheus configuration, pointed at TARGET, scraping every second."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / rules) for rules in config["rule_files"]]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    job["static_configs"] = [{"targets": [target]}]
    Path(out).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


async def traffic(base_url, api_key):
    """Connects, pings, sends a bad frame, forwards to the dev queue, receives a publication, closes."""
    ws_url = base_url.replace("http", "ws", 1) + "/ws?project_id=monitoring-kit"
    async with websockets.connect(ws_url) as ws:

        async def reply(predicate, what):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                message = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                if predicate(message):
                    return message
            fail(f"no {what} within 20 s")

        await reply(lambda m: m.get("type") == "connected", "the connected message")
        await ws.send(json.dumps({"action": "ping"}))
        await reply(lambda m: m.get("type") == "pong", "pong")
        await ws.send("{")
        await reply(lambda m: m.get("type") == "error", "error for a bad frame")
        forward = {"action": "forward", "type": "dev", "message_id": "kit-1", "project_id": "monitoring-kit",
                   "data": {"task": "monitoring kit"}}
        await ws.send(json.dumps(forward))
        confirmed = await reply(lambda m: m.get("message_id") == "kit-1", "forward answer")
        if confirmed.get("type") != "forward_confirmed":
            fail(f"forward not confirmed: {confirmed}")
        publish = urllib.request.Request(
            base_url + "/api/v1/publish", method="POST",
            data=json.dumps({"project_id": "monitoring-kit", "type": "status", "data": {}}).encode(),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(publish, timeout=10):
            pass
        await reply(lambda m: m.get("type") == "message", "the publication")
    print("traffic: connected, pinged, refused a bad frame, forwarded to dev (SQS), received a publication")


def exported_names(base_url):
    """The sample names of the gateway's /metrics (histograms as their _bucket, _sum, _count)."""
    names = set()
    for line in http_get(base_url + "/metrics").splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def metric_names(expr):
    """The metric names an expression reads: identifiers outside label matchers, grouping
    clauses, strings and ranges that are not function calls or keywords."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", bare):
        rest = bare[match.end():].lstrip()
        if not rest.startswith("(") and match.group() not in PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def query(prometheus_url, expr):
    url = prometheus_url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        answer = json.loads(http_get(url))
    except urllib.error.HTTPError as error:
        answer = json.loads(error.read().decode() or "{}")
    if answer.get("status") != "success":
        fail(f"{expr!r} does not evaluate: {answer.get('error', answer)}")
    return answer["data"]["result"]


def expressions():
    """(where, expression) for every dashboard target and every alert rule."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((f"panel {panel['title']!r}", expr))
    for group in yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            found.append((f"alert {rule['alert']}", rule["expr"]))
    return found


def check(base_url, prometheus_url):
    deadline = time.monotonic() + 30
    while True:
        up = query(prometheus_url, f'up{{job="{JOB}"}}')
        if up and all(sample["value"][1] == "1" for sample in up):
            break
        if time.monotonic() > deadline:
            fail(f"the gateway's target is not up in Prometheus: {up}")
        time.sleep(0.5)
    # A range needs two scrapes after the traffic for rate() to have something to read.
    time.sleep(3)
    exported = exported_names(base_url) | PROMETHEUS_SERIES
    checked = expressions()
    for where, expr in checked:
        unknown = metric_names(expr) - exported
        if unknown:
            fail(f"{where} reads {sorted(unknown)}, which the gateway does not export")
        query(prometheus_url, expr)
    rules = json.loads(http_get(prometheus_url + "/api/v1/rules"))["data"]["groups"]
    loaded = [rule for group in rules for rule in group["rules"]]
    unhealthy = [(rule["name"], rule.get("lastError")) for rule in loaded if rule.get("health") != "ok"]
    if unhealthy or len(loaded) != sum(where.startswith("alert ") for where, _ in checked):
        fail(f"Prometheus's own evaluation of the rules: {len(loaded)} loaded, unhealthy: {unhealthy}")
    firing = [rule["name"] for rule in loaded if rule.get("state") == "firing"]
    if firing:
        fail(f"alerts firing against a healthy gateway: {firing}")
    print(f"prometheus: target up; {len(checked)} expressions ({len(loaded)} alert rules) evaluate, "
          f"every metric they read is exported; no alert firing")


def main():
    command, *args = sys.argv[1:] or ["help"]
    if command == "compose" and len(args) == 1:
        compose(*args)
    elif command == "prometheus-config" and len(args) == 2:
        prometheus_config(*args)
    elif command == "traffic" and len(args) == 2:
        asyncio.run(traffic(*args))
    elif command == "check" and len(args) == 2:
        check(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
