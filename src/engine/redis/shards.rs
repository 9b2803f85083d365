//! The shards of a Redis Cluster as this task sees them: what `/ready` and the per-shard metrics
//! say.
//!
//! Every [`SURVEY_PERIOD`], and at once when the subscriber loses a node's connection, the
//! survey asks a node for the cluster's shards (`CLUSTER SHARDS`: each shard's slots, primary
//! and replicas) and `PING`s every node, on connections of its own, each within
//! [`PROBE_TIMEOUT`]. Redis counts as up (`/ready` 200, `agenticai_ws_redis_connected` 1) while
//! every shard's primary answers: a lost replica is a metric and one WARN, not unreadiness; a
//! lost primary makes `/ready` 503 until it answers again or a replica is promoted in its place.
//!
//! Why connections of its own: the cluster connection knows the nodes of its last slot map,
//! which leaves a failed replica out and takes it back only when a command is redirected, and it
//! repairs a lost connection in the background, with retries, where a survey has to answer within
//! a second. The subscriber's cluster connection is asked only whether it reaches each shard's
//! primary, where its sharded subscriptions live (`redis_shard_subscribed`).
//!
//! A shard is named by its first slot range (`0-5460`): the same across a failover and a
//! restart, another only when a reshard moves that range's first slot. The series of a shard no
//! longer there are removed: there are as many as shards. One node (REDIS_CLUSTER unset) is one
//! shard holding every slot, [`EVERY_SLOT`], with the same series but the replicas' (the
//! single-node engine does not look for replicas).
//!
//! The survey runs beside the subscriber loop, in its task ([`super::sharded_subscriber`]): a
//! slow or unreachable node delays a survey, never a delivery.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, PoisonError,
    },
    time::Duration,
};

use futures_util::future::join_all;
use prometheus::IntCounter;
use redis::{
    aio::MultiplexedConnection,
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, Value,
};
use tokio::sync::Notify;

use super::{cluster::slot_of, RedisEngine};
use crate::metrics::Metrics;

/// How often the cluster is surveyed while nothing happens.
const SURVEY_PERIOD: Duration = Duration::from_secs(1);
/// How long a node has to accept a connection and to answer a command before it counts as
/// unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The `shard` label of one node (REDIS_CLUSTER unset).
pub(super) const EVERY_SLOT: &str = "0-16383";

/// A node, as the cluster names it to clients (the address `CLUSTER SLOTS` gives, which the
/// cluster connection uses too).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Node {
    host: String,
    port: u16,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Node {
    fn of(info: &ConnectionInfo) -> Option<Node> {
        match info.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                Some(Node { host: host.clone(), port: *port })
            }
            _ => None,
        }
    }
}

/// A shard: its slot ranges (lowest first), its primary (none while the cluster names none)
/// and its replicas.
#[derive(Clone, Debug, PartialEq)]
struct Shard {
    ranges: SlotRanges,
    primary: Option<Node>,
    replicas: Vec<Node>,
}

impl Shard {
    /// Its first slot range, `first-last`: its `shard` label.
    fn label(&self) -> String {
        self.ranges.first().map(|(first, last)| format!("{first}-{last}")).unwrap_or_default()
    }
}

/// What one survey found of a shard.
struct ShardReport {
    shard: Shard,
    label: String,
    primary_up: bool,
    replicas_up: usize,
    subscribed: bool,
    /// Its `redis_shard_messages_received_total`, resolved once per survey.
    received: IntCounter,
}

/// Slot ranges, first and last slot of each, inclusive.
type SlotRanges = Vec<(u16, u16)>;

/// What the survey and the subscriber loop share.
#[derive(Default)]
pub(super) struct ShardView {
    /// Set by the subscriber: whether every followed channel is subscribed where its slot lives.
    pub(super) whole: AtomicBool,
    /// Notified by the subscriber when a node's connection drops: survey now.
    pub(super) lost: Notify,
    /// Each shard's slot ranges and its counter of messages received, from the last survey.
    counters: Mutex<Vec<(SlotRanges, IntCounter)>>,
}

impl ShardView {
    /// Counts a message received on `channel` for the shard owning its slot (one moved since
    /// the last survey, a second ago at most, is not counted).
    pub(super) fn received(&self, channel: &str) {
        let slot = slot_of(channel.as_bytes());
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let owner =
            counters.iter().find(|(ranges, _)| ranges.iter().any(|&(first, last)| first <= slot && slot <= last));
        if let Some((_, counter)) = owner {
            counter.inc();
        }
    }
}

/// Surveys the cluster every [`SURVEY_PERIOD`] and whenever `view.lost` is notified, marking
/// Redis up or down and exporting each shard's series; never ends.
pub(super) async fn survey_forever(
    engine: &RedisEngine,
    seeds: &[ConnectionInfo],
    subscription: ClusterConnection,
    view: &ShardView,
) {
    let Some(mut survey) = Survey::new(seeds) else {
        // No seed to ask: the engine's connect refuses a cluster without one, so never here.
        return std::future::pending().await;
    };
    let mut period = tokio::time::interval(SURVEY_PERIOD);
    period.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = period.tick() => {}
            () = view.lost.notified() => {}
        }
        let reports = survey.run(&subscription, view.whole.load(Ordering::SeqCst), &engine.metrics).await;
        let every_primary_up = !reports.is_empty() && reports.iter().all(|report| report.primary_up);
        *view.counters.lock().unwrap_or_else(PoisonError::into_inner) =
            reports.iter().map(|report| (report.shard.ranges.clone(), report.received.clone())).collect();
        survey.last = reports;
        engine.health.set(every_primary_up, &engine.metrics);
    }
}

/// Marks the one node (REDIS_CLUSTER unset) reachable and subscribed, or not, in the per-shard
/// series.
pub(super) fn one_node_is(metrics: &Metrics, up: bool) {
    metrics.redis_shard_primary_up.with_label_values(&[EVERY_SLOT]).set(i64::from(up));
    metrics.redis_shard_subscribed.with_label_values(&[EVERY_SLOT]).set(i64::from(up));
}

struct Survey {
    /// The first seed's settings (TLS, AUTH): every node is reached with them.
    settings: ConnectionInfo,
    /// Whether nodes are reached over TLS, so which of a node's ports the cluster names.
    tls: bool,
    seeds: Vec<Node>,
    /// The survey's connection to each node that answered last time.
    connections: HashMap<Node, MultiplexedConnection>,
    /// The last survey's findings.
    last: Vec<ShardReport>,
}

impl Survey {
    fn new(seeds: &[ConnectionInfo]) -> Option<Self> {
        let settings = seeds.first()?.clone();
        let tls = matches!(settings.addr(), ConnectionAddr::TcpTls { .. });
        Some(Survey {
            settings,
            tls,
            seeds: seeds.iter().filter_map(Node::of).collect(),
            connections: HashMap::new(),
            last: Vec::new(),
        })
    }

    /// The shards and how each answers; the last survey's shards, none answering, when no node
    /// says what the shards are.
    async fn run(&mut self, subscription: &ClusterConnection, whole: bool, metrics: &Metrics) -> Vec<ShardReport> {
        let shards = match self.topology().await {
            Some(shards) => shards,
            None => self.last.iter().map(|report| report.shard.clone()).collect(),
        };
        let nodes: Vec<Node> = shards
            .iter()
            .flat_map(|shard| shard.primary.iter().chain(&shard.replicas))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let answers = join_all(nodes.iter().map(|node| {
            let (settings, cached) = (self.settings_for(node), self.connections.remove(node));
            ask(settings, cached, redis::cmd("PING"))
        }))
        .await;
        self.connections.clear();
        let mut up = HashSet::new();
        for (node, (connection, answer)) in nodes.into_iter().zip(answers) {
            if let Some(connection) = connection {
                self.connections.insert(node.clone(), connection);
            }
            if answer.is_some() {
                up.insert(node);
            }
        }
        let subscribed = join_all(shards.iter().map(|shard| {
            let (mut subscription, primary) = (subscription.clone(), shard.primary.clone());
            async move {
                let Some(Node { host, port }) = primary else { return false };
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                let ping = subscription.route_command(redis::cmd("PING"), route);
                matches!(tokio::time::timeout(PROBE_TIMEOUT, ping).await, Ok(Ok(_)))
            }
        }))
        .await;
        let reports: Vec<ShardReport> = shards
            .into_iter()
            .zip(subscribed)
            .map(|(shard, subscribed)| {
                let label = shard.label();
                let primary_up = shard.primary.as_ref().is_some_and(|primary| up.contains(primary));
                let replicas_up = shard.replicas.iter().filter(|replica| up.contains(*replica)).count();
                let received = metrics.redis_shard_messages_received.with_label_values(&[&label]);
                ShardReport {
                    label,
                    primary_up,
                    replicas_up,
                    subscribed: subscribed && whole && primary_up,
                    received,
                    shard,
                }
            })
            .collect();
        self.log_changes(&reports);
        self.export(&reports, metrics);
        reports
    }

    /// The shards, as the first node to answer `CLUSTER SHARDS` says (last survey's primaries
    /// first, then its replicas, then the seeds); None when none answers.
    async fn topology(&mut self) -> Option<Vec<Shard>> {
        let mut candidates: Vec<Node> = Vec::new();
        let known = self.last.iter().map(|report| &report.shard);
        let primaries = known.clone().filter_map(|shard| shard.primary.clone());
        let replicas = known.flat_map(|shard| shard.replicas.clone());
        for node in primaries.chain(replicas).chain(self.seeds.iter().cloned()) {
            if !candidates.contains(&node) {
                candidates.push(node);
            }
        }
        for node in candidates {
            let cached = self.connections.remove(&node);
            let (connection, answer) =
                ask(self.settings_for(&node), cached, redis::cmd("CLUSTER").arg("SHARDS").clone()).await;
            if let Some(connection) = connection {
                self.connections.insert(node, connection);
            }
            if let Some(shards) = answer.and_then(|answer| parse_shards(&answer, self.tls)) {
                return Some(shards);
            }
        }
        None
    }

    /// The first seed's settings, pointed at `node`.
    fn settings_for(&self, node: &Node) -> ConnectionInfo {
        let addr = match self.settings.addr() {
            ConnectionAddr::TcpTls { insecure, tls_params, .. } => ConnectionAddr::TcpTls {
                host: node.host.clone(),
                port: node.port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(node.host.clone(), node.port),
        };
        self.settings.clone().set_addr(addr)
    }

    /// One WARN for each shard that lost its primary or a replica since the last survey, one
    /// INFO when it is back (a new primary: a failover).
    fn log_changes(&self, reports: &[ShardReport]) {
        for report in reports {
            let before = self.last.iter().find(|last| last.label == report.label);
            let shard = report.label.as_str();
            let primary = report.shard.primary.as_ref().map(ToString::to_string).unwrap_or_default();
            if !report.primary_up && before.is_none_or(|before| before.primary_up) {
                log::warn!(shard = shard, primary = primary.as_str();
                    "redis cluster shard has no reachable primary: its projects' publications are refused until a replica is promoted or it answers again");
            } else if report.primary_up && before.is_some_and(|before| !before.primary_up) {
                log::info!(shard = shard, primary = primary.as_str(); "redis cluster shard has a reachable primary again");
            } else if before.is_some_and(|before| before.shard.primary != report.shard.primary) {
                log::info!(shard = shard, primary = primary.as_str(); "redis cluster shard has a new primary");
            }
            let (replicas, replicas_up) = (report.shard.replicas.len(), report.replicas_up);
            let replicas_before = before.map_or(replicas, |before| before.replicas_up);
            if replicas_up < replicas_before {
                log::warn!(shard = shard, replicas = replicas, replicas_up = replicas_up; "redis cluster replica unreachable: the shard still serves, with less redundancy");
            } else if replicas_up > replicas_before {
                log::info!(shard = shard, replicas = replicas, replicas_up = replicas_up; "redis cluster replica reachable again");
            }
        }
    }

    /// Each shard's series; those of a shard no longer there removed.
    fn export(&self, reports: &[ShardReport], metrics: &Metrics) {
        let gauges = [
            &metrics.redis_shard_primary_up,
            &metrics.redis_shard_replicas,
            &metrics.redis_shard_replicas_up,
            &metrics.redis_shard_subscribed,
        ];
        for report in reports {
            let label = [report.label.as_str()];
            let figures = [
                i64::from(report.primary_up),
                report.shard.replicas.len() as i64,
                report.replicas_up as i64,
                i64::from(report.subscribed),
            ];
            for (gauge, figure) in gauges.iter().zip(figures) {
                gauge.with_label_values(&label).set(figure);
            }
        }
        for gone in self.last.iter().filter(|last| reports.iter().all(|report| report.label != last.label)) {
            let label = [gone.label.as_str()];
            for gauge in gauges {
                // Absent already: nothing to remove.
                let _ = gauge.remove_label_values(&label);
            }
            let _ = metrics.redis_shard_messages_received.remove_label_values(&label);
        }
    }
}

/// Sends `command` to a node on `cached` (or a new connection); the connection, when it
/// answered, and the answer (None on an error reply, a timeout or a lost connection).
async fn ask(
    settings: ConnectionInfo,
    cached: Option<MultiplexedConnection>,
    command: redis::Cmd,
) -> (Option<MultiplexedConnection>, Option<Value>) {
    let mut connection = match cached {
        Some(connection) => connection,
        None => {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(PROBE_TIMEOUT))
                .set_response_timeout(Some(PROBE_TIMEOUT));
            let connecting =
                async { redis::Client::open(settings)?.get_multiplexed_async_connection_with_config(&config).await };
            match connecting.await {
                Ok(connection) => connection,
                Err(_) => return (None, None),
            }
        }
    };
    match command.query_async::<Value>(&mut connection).await {
        Ok(answer) => (Some(connection), Some(answer)),
        Err(_) => (None, None),
    }
}

/// The fields of a reply that is a map (RESP3) or a list of names and values (RESP2).
fn fields(value: &Value) -> Vec<(String, &Value)> {
    let name = |value: &Value| redis::from_redis_value_ref::<String>(value).ok();
    match value {
        Value::Map(pairs) => pairs.iter().filter_map(|(key, value)| Some((name(key)?, value))).collect(),
        Value::Array(items) => items.chunks(2).filter_map(|pair| Some((name(pair.first()?)?, pair.get(1)?))).collect(),
        _ => Vec::new(),
    }
}

fn field<'a>(fields: &[(String, &'a Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(field, _)| field == name).map(|(_, value)| *value)
}

/// `CLUSTER SHARDS` as [`Shard`]s, lowest slot first; shards without slots (a primary whose
/// slots all moved away) left out. None when the reply is not a list of shards.
fn parse_shards(reply: &Value, tls: bool) -> Option<Vec<Shard>> {
    let Value::Array(shards) = reply else { return None };
    let mut parsed: Vec<Shard> = shards.iter().filter_map(|shard| parse_shard(shard, tls)).collect();
    parsed.sort_by_key(|shard| shard.ranges.first().copied());
    Some(parsed)
}

fn parse_shard(value: &Value, tls: bool) -> Option<Shard> {
    let shard_fields = fields(value);
    let slots: Vec<u16> = redis::from_redis_value_ref(field(&shard_fields, "slots")?).ok()?;
    let mut ranges: SlotRanges = slots.chunks_exact(2).map(|range| (range[0], range[1])).collect();
    if ranges.is_empty() {
        return None;
    }
    ranges.sort_unstable();
    let Value::Array(nodes) = field(&shard_fields, "nodes")? else { return None };
    let (mut primary, mut replicas) = (None, Vec::new());
    for node in nodes {
        let node_fields = fields(node);
        let text =
            |name: &str| field(&node_fields, name).and_then(|value| redis::from_redis_value_ref::<String>(value).ok());
        let port =
            |name: &str| field(&node_fields, name).and_then(|value| redis::from_redis_value_ref::<u16>(value).ok());
        // The address CLUSTER SLOTS gives: the preferred endpoint (`?` when it has none: the ip),
        // and the TLS port to a client on TLS.
        let host = text("endpoint").filter(|endpoint| !endpoint.is_empty() && endpoint != "?").or_else(|| text("ip"));
        let ports = if tls { ["tls-port", "port"] } else { ["port", "tls-port"] };
        let (Some(host), Some(port)) = (host, ports.iter().find_map(|name| port(name).filter(|&port| port != 0)))
        else {
            continue;
        };
        match text("role").as_deref() {
            Some("master") => primary = Some(Node { host, port }),
            _ => replicas.push(Node { host, port }),
        }
    }
    Some(Shard { ranges, primary, replicas })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> Value {
        Value::BulkString(value.as_bytes().to_vec())
    }

    fn node(port: i64, role: &str) -> Value {
        Value::Array(vec![
            text("id"),
            text("abc"),
            text("port"),
            Value::Int(port),
            text("ip"),
            text("10.0.0.1"),
            text("endpoint"),
            text("?"),
            text("role"),
            text(role),
            text("health"),
            text("online"),
        ])
    }

    #[test]
    fn cluster_shards_read_as_slot_ranges_primary_and_replicas() {
        let shard = |slots: Vec<i64>, nodes: Vec<Value>| {
            Value::Array(vec![
                text("slots"),
                Value::Array(slots.into_iter().map(Value::Int).collect()),
                text("nodes"),
                Value::Array(nodes),
            ])
        };
        let reply = Value::Array(vec![
            shard(vec![5461, 10922], vec![node(7002, "replica"), node(7001, "master")]),
            shard(vec![100, 200, 0, 99], vec![node(7000, "master")]),
            shard(vec![], vec![node(7003, "master")]),
        ]);
        let shards = parse_shards(&reply, false).expect("a list of shards");
        assert_eq!(shards.len(), 2, "a shard without slots is left out");
        assert_eq!(shards[0].label(), "0-99", "named by the lowest range");
        assert_eq!(shards[0].ranges, vec![(0, 99), (100, 200)]);
        let at = |port| Node { host: "10.0.0.1".into(), port };
        assert_eq!(shards[1].primary, Some(at(7001)), "the ip, when there is no preferred endpoint");
        assert_eq!(shards[1].replicas, vec![at(7002)]);
        assert_eq!(parse_shards(&text("nope"), false), None);
    }
}
