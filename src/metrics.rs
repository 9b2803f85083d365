//! Prometheus metrics, served at `GET /metrics`: the gateway's own prefixed `agenticai_ws_`
//! (`agenticai_ws_build_info{version,commit}` among them), the process's under the standard
//! `process_*` names every Prometheus dashboard knows.
//!
//! One [`Metrics`] per server instance (tests run several in one process), shared as
//! `Arc<Metrics>`. The hub resolves its hot-path counter once ([`Metrics::message_frames_out`])
//! so a fan-out costs one atomic add, not a label lookup per delivery.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::protocol::{CloseCode, ErrorCode};

const NAMESPACE: &str = "agenticai_ws";

pub(crate) struct Metrics {
    registry: Registry,
    /// Always 1; its labels say which build answers (`version` from Cargo.toml, `commit` from
    /// build.rs).
    build_info: IntGaugeVec,
    engine_info: IntGaugeVec,
    pub active_connections: IntGauge,
    pub connections_opened: IntCounter,
    connections_closed: IntCounterVec,
    pub slow_consumers_closed: IntCounter,
    pub subscriptions: IntGauge,
    pub projects: IntGauge,
    frames_in: IntCounterVec,
    frames_out: IntCounterVec,
    errors: IntCounterVec,
    pub deliveries: IntCounter,
    pub publications: IntCounterVec,
    pub publish_fanout: Histogram,
    pub forward_entries: IntCounterVec,
    pub forward_pending: IntGauge,
    /// Forwards held by the dispatcher, by queue and state: `waiting` for a batch, `in_flight`
    /// in a batch being sent.
    pub forward_queue_entries: IntGaugeVec,
    pub sqs_batch_entries: Histogram,
    pub sqs_batch_seconds: HistogramVec,
    pub records_written: IntCounterVec,
    pub records_dropped: IntCounter,
    pub record_retries: IntCounter,
    pub records_buffered: IntGauge,
    pub dynamodb_batch_seconds: Histogram,
    pub draining: IntGauge,
    pub redis_connected: IntGauge,
    pub redis_reconnects: IntCounter,
    /// Per Redis shard (label `shard`: its first slot range; one node is `0-16383`), from the
    /// engine's survey ([`crate::engine::redis`]'s `shards`): 1 while its primary answers.
    pub redis_shard_primary_up: IntGaugeVec,
    /// The shard's replicas, as the cluster lists them (a Redis Cluster only).
    pub redis_shard_replicas: IntGaugeVec,
    /// Those of them that answer (a Redis Cluster only).
    pub redis_shard_replicas_up: IntGaugeVec,
    /// 1 while this task's subscriber holds its channels on the shard.
    pub redis_shard_subscribed: IntGaugeVec,
    /// Messages the subscriber received from the shard (publications, presence events, appends).
    pub redis_shard_messages_received: IntCounterVec,
    pub cross_task_latency: Histogram,
    pub recoveries: IntCounterVec,
    pub history_reads: IntCounterVec,
    pub updates: IntCounterVec,
    /// Tokens accepted, by how they came: `upgrade`, `authenticate`, `refresh`.
    pub authentications: IntCounterVec,
    /// Tokens refused, by reason (`bad_signature`, `expired`, ...; `timeout` for a connection
    /// that never authenticated).
    pub auth_failures: IntCounterVec,
    /// Open connections with a verified token.
    pub authenticated_connections: IntGauge,
    /// Connections closed because their token expired (3005).
    pub token_expiries: IntCounter,
    /// Refusals by the abuse limits, by `limit`: `max_connections`, `per_user`, `per_ip`,
    /// `rate` (a frame over its connection's budget), `api_rate` (the publish API's budget),
    /// `handshake_timeout` (a TCP connection closed before its HTTP request arrived),
    /// `http_per_ip` (a TCP connection closed at the accept: its address held
    /// MAX_CONNECTIONS_PER_IP HTTP connections, not WebSockets).
    pub limit_refusals: IntCounterVec,
    /// TCP connections whose first HTTP request has not been handled yet: sockets in their
    /// handshake (slowloris ones among them) and first API requests in progress.
    pub pending_handshakes: IntGauge,
    /// This task's presence members (subscriptions reported to the engine).
    pub presence_members: IntGauge,
    /// Joins and leaves of this task's members, by kind.
    pub presence_events: IntCounterVec,
    /// `presence` and `presence_stats` requests, by kind and where they came from.
    pub presence_queries: IntCounterVec,
    /// Appends to agent streams this task accepted, by source (`websocket`, `http`,
    /// `agent_update`).
    pub stream_appends: IntCounterVec,
    /// Appends this task's hub received for its viewers (from every task).
    pub stream_appends_delivered: IntCounter,
    /// `stream_append` frames the hub encoded for its viewers: one per rollup window per stream.
    /// The rollup ratio is `stream_appends_delivered_total / stream_rollups_total`.
    pub stream_rollups: IntCounter,
    /// Open agent streams of the projects this task's connections follow.
    pub streams_open: IntGauge,
    /// Streams this task ended as `abandoned` (quiet for STREAM_IDLE_TIMEOUT_SECS).
    pub streams_abandoned: IntCounter,
}

/// The `limit` labels of `limit_refusals_total`, created at start so a dashboard sees zeros.
pub(crate) const LIMITS: [&str; 7] =
    ["max_connections", "per_user", "per_ip", "rate", "api_rate", "handshake_timeout", "http_per_ip"];

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

fn histogram_opts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help).namespace(NAMESPACE).buckets(buckets)
}

impl Metrics {
    /// Creates and registers every metric, process metrics included.
    pub(crate) fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let seconds = exponential_buckets(0.0005, 2.0, 16)?;
        let metrics = Metrics {
            build_info: IntGaugeVec::new(
                opts("build_info", "Always 1: the version and commit of the running gateway, as labels"),
                &["version", "commit"],
            )?,
            engine_info: IntGaugeVec::new(
                opts("engine_info", "Always 1: the engine below the hub (memory, redis or redis_cluster), as a label"),
                &["engine"],
            )?,
            active_connections: IntGauge::with_opts(opts("active_connections", "Open WebSocket connections"))?,
            connections_opened: IntCounter::with_opts(opts(
                "connections_opened_total",
                "WebSocket connections accepted",
            ))?,
            connections_closed: IntCounterVec::new(
                opts(
                    "connections_closed_total",
                    "WebSocket connections closed, by ending (close code, client_closed, connection_lost)",
                ),
                &["code"],
            )?,
            slow_consumers_closed: IntCounter::with_opts(opts(
                "slow_consumers_closed_total",
                "Connections closed because their outbound queue was full (3008)",
            ))?,
            subscriptions: IntGauge::with_opts(opts(
                "subscriptions",
                "Project subscriptions held by local connections",
            ))?,
            projects: IntGauge::with_opts(opts("projects", "Projects with at least one local subscriber"))?,
            frames_in: IntCounterVec::new(opts("frames_in_total", "Client frames received, by action"), &["action"])?,
            frames_out: IntCounterVec::new(opts("frames_out_total", "Frames sent to clients, by type"), &["type"])?,
            errors: IntCounterVec::new(opts("errors_total", "Error replies sent, by code"), &["code"])?,
            deliveries: IntCounter::with_opts(opts(
                "deliveries_total",
                "Publications queued to a subscriber's connection",
            ))?,
            publications: IntCounterVec::new(
                opts("publications_total", "Publications accepted, by source"),
                &["source"],
            )?,
            publish_fanout: Histogram::with_opts(histogram_opts(
                "publish_fanout_size",
                "Local subscribers one publication reached",
                exponential_buckets(1.0, 4.0, 10)?,
            ))?,
            forward_entries: IntCounterVec::new(
                opts("forward_entries_total", "Forwarded messages by queue and outcome (sent, failed, retried)"),
                &["queue", "outcome"],
            )?,
            forward_pending: IntGauge::with_opts(opts(
                "forward_pending",
                "Forwards accepted from clients and not yet confirmed or failed",
            ))?,
            forward_queue_entries: IntGaugeVec::new(
                opts(
                    "forward_queue_entries",
                    "Forwards held by the dispatcher, by queue and state (waiting, in_flight)",
                ),
                &["queue", "state"],
            )?,
            sqs_batch_entries: Histogram::with_opts(histogram_opts(
                "sqs_batch_entries",
                "Entries per SendMessageBatch call (or spool write)",
                vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
            ))?,
            sqs_batch_seconds: HistogramVec::new(
                histogram_opts(
                    "sqs_batch_seconds",
                    "SendMessageBatch (or spool write) latency, by queue",
                    seconds.clone(),
                ),
                &["queue"],
            )?,
            records_written: IntCounterVec::new(
                opts("records_written_total", "Records persisted, by kind"),
                &["kind"],
            )?,
            records_dropped: IntCounter::with_opts(opts(
                "records_dropped_total",
                "Records dropped: the persistence buffer was full, or the store refused them for good",
            ))?,
            record_retries: IntCounter::with_opts(opts(
                "record_retries_total",
                "Record writes retried (unprocessed items, throttling, errors)",
            ))?,
            records_buffered: IntGauge::with_opts(opts("records_buffered", "Records waiting to be persisted"))?,
            dynamodb_batch_seconds: Histogram::with_opts(histogram_opts(
                "dynamodb_batch_seconds",
                "BatchWriteItem (or local store write) latency",
                seconds,
            ))?,
            draining: IntGauge::with_opts(opts("draining", "1 while the server drains for shutdown"))?,
            redis_connected: IntGauge::with_opts(opts(
                "redis_connected",
                "1 while Redis is up: one node's pub/sub connection, or every cluster shard's primary (always 0 without REDIS_URL)",
            ))?,
            redis_reconnects: IntCounter::with_opts(opts("redis_reconnects_total", "Redis pub/sub connections lost"))?,
            redis_shard_primary_up: IntGaugeVec::new(
                opts("redis_shard_primary_up", "1 while the Redis shard's primary answers, by shard (its first slot range)"),
                &["shard"],
            )?,
            redis_shard_replicas: IntGaugeVec::new(
                opts("redis_shard_replicas", "Replicas of the Redis Cluster shard, as the cluster lists them"),
                &["shard"],
            )?,
            redis_shard_replicas_up: IntGaugeVec::new(
                opts("redis_shard_replicas_up", "Replicas of the Redis Cluster shard that answer"),
                &["shard"],
            )?,
            redis_shard_subscribed: IntGaugeVec::new(
                opts("redis_shard_subscribed", "1 while this task's subscriber holds its channels on the Redis shard"),
                &["shard"],
            )?,
            redis_shard_messages_received: IntCounterVec::new(
                opts(
                    "redis_shard_messages_received_total",
                    "Messages (publications, presence events, stream appends) received from the Redis shard",
                ),
                &["shard"],
            )?,
            cross_task_latency: Histogram::with_opts(histogram_opts(
                "cross_task_publish_seconds",
                "From publish (any task) to arrival at this task's hub, via Redis",
                exponential_buckets(0.0005, 2.0, 14)?,
            ))?,
            recoveries: IntCounterVec::new(
                opts("recoveries_total", "Subscriptions resumed with `since`, by outcome (recovered, not_recovered)"),
                &["outcome"],
            )?,
            history_reads: IntCounterVec::new(
                opts("history_reads_total", "HTTP history reads, by result (hit: the history covers `since`; miss)"),
                &["result"],
            )?,
            updates: IntCounterVec::new(
                opts("agent_updates_total", "Agent updates read from SQS_QUEUE_URL_UPDATES, by outcome"),
                &["outcome"],
            )?,
            authentications: IntCounterVec::new(
                opts("authentications_total", "Tokens accepted, by how they came (upgrade, authenticate, refresh)"),
                &["via"],
            )?,
            auth_failures: IntCounterVec::new(
                opts("auth_failures_total", "Tokens refused and connections that never authenticated, by reason"),
                &["reason"],
            )?,
            authenticated_connections: IntGauge::with_opts(opts(
                "authenticated_connections",
                "Open connections with a verified token (the rest of active_connections are anonymous)",
            ))?,
            token_expiries: IntCounter::with_opts(opts(
                "token_expiries_total",
                "Connections closed because their token expired without a refresh (3005)",
            ))?,
            limit_refusals: IntCounterVec::new(
                opts("limit_refusals_total", "Connections and requests refused by the abuse limits, by limit"),
                &["limit"],
            )?,
            pending_handshakes: IntGauge::with_opts(opts(
                "pending_handshakes",
                "TCP connections whose first HTTP request has not been handled yet (slowloris sockets among them)",
            ))?,
            presence_members: IntGauge::with_opts(opts(
                "presence_members",
                "Subscriptions of this task's connections in presence (0 with PRESENCE=false)",
            ))?,
            presence_events: IntCounterVec::new(
                opts("presence_events_total", "Joins and leaves of this task's presence members, by kind"),
                &["kind"],
            )?,
            presence_queries: IntCounterVec::new(
                opts(
                    "presence_queries_total",
                    "Presence reads, by kind (presence, presence_stats) and via (websocket, http)",
                ),
                &["kind", "via"],
            )?,
            stream_appends: IntCounterVec::new(
                opts("stream_appends_total", "Appends to agent streams this task accepted, by source"),
                &["source"],
            )?,
            stream_appends_delivered: IntCounter::with_opts(opts(
                "stream_appends_delivered_total",
                "Appends to agent streams this task's viewers were sent (from every task), before rollup",
            ))?,
            stream_rollups: IntCounter::with_opts(opts(
                "stream_rollups_total",
                "stream_append frames encoded for this task's viewers (one per rollup window per stream)",
            ))?,
            streams_open: IntGauge::with_opts(opts(
                "streams_open",
                "Open agent streams of the projects this task's connections follow",
            ))?,
            streams_abandoned: IntCounter::with_opts(opts(
                "streams_abandoned_total",
                "Agent streams this task ended as abandoned (no append for STREAM_IDLE_TIMEOUT_SECS)",
            ))?,
            registry,
        };
        metrics.register_all()?;
        Ok(metrics)
    }

    /// Names the engine in `engine_info` (an alert on a lost Redis needs to know there is one).
    pub(crate) fn engine_is(&self, engine: &'static str) {
        self.engine_info.with_label_values(&[engine]).set(1);
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.build_info.clone()))?;
        self.build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), env!("AGENTICAI_WS_COMMIT")]).set(1);
        r.register(Box::new(self.engine_info.clone()))?;
        r.register(Box::new(self.active_connections.clone()))?;
        r.register(Box::new(self.connections_opened.clone()))?;
        r.register(Box::new(self.connections_closed.clone()))?;
        r.register(Box::new(self.slow_consumers_closed.clone()))?;
        r.register(Box::new(self.subscriptions.clone()))?;
        r.register(Box::new(self.projects.clone()))?;
        r.register(Box::new(self.frames_in.clone()))?;
        r.register(Box::new(self.frames_out.clone()))?;
        r.register(Box::new(self.errors.clone()))?;
        r.register(Box::new(self.deliveries.clone()))?;
        r.register(Box::new(self.publications.clone()))?;
        r.register(Box::new(self.publish_fanout.clone()))?;
        r.register(Box::new(self.forward_entries.clone()))?;
        r.register(Box::new(self.forward_pending.clone()))?;
        r.register(Box::new(self.forward_queue_entries.clone()))?;
        r.register(Box::new(self.sqs_batch_entries.clone()))?;
        r.register(Box::new(self.sqs_batch_seconds.clone()))?;
        r.register(Box::new(self.records_written.clone()))?;
        r.register(Box::new(self.records_dropped.clone()))?;
        r.register(Box::new(self.record_retries.clone()))?;
        r.register(Box::new(self.records_buffered.clone()))?;
        r.register(Box::new(self.dynamodb_batch_seconds.clone()))?;
        r.register(Box::new(self.draining.clone()))?;
        r.register(Box::new(self.redis_connected.clone()))?;
        r.register(Box::new(self.redis_reconnects.clone()))?;
        r.register(Box::new(self.redis_shard_primary_up.clone()))?;
        r.register(Box::new(self.redis_shard_replicas.clone()))?;
        r.register(Box::new(self.redis_shard_replicas_up.clone()))?;
        r.register(Box::new(self.redis_shard_subscribed.clone()))?;
        r.register(Box::new(self.redis_shard_messages_received.clone()))?;
        r.register(Box::new(self.cross_task_latency.clone()))?;
        r.register(Box::new(self.recoveries.clone()))?;
        r.register(Box::new(self.history_reads.clone()))?;
        r.register(Box::new(self.updates.clone()))?;
        r.register(Box::new(self.authentications.clone()))?;
        r.register(Box::new(self.auth_failures.clone()))?;
        r.register(Box::new(self.authenticated_connections.clone()))?;
        r.register(Box::new(self.token_expiries.clone()))?;
        r.register(Box::new(self.limit_refusals.clone()))?;
        r.register(Box::new(self.pending_handshakes.clone()))?;
        for limit in LIMITS {
            self.limit_refusals.with_label_values(&[limit]);
        }
        r.register(Box::new(self.presence_members.clone()))?;
        r.register(Box::new(self.presence_events.clone()))?;
        r.register(Box::new(self.presence_queries.clone()))?;
        r.register(Box::new(self.stream_appends.clone()))?;
        r.register(Box::new(self.stream_appends_delivered.clone()))?;
        r.register(Box::new(self.stream_rollups.clone()))?;
        r.register(Box::new(self.streams_open.clone()))?;
        r.register(Box::new(self.streams_abandoned.clone()))?;
        #[cfg(target_os = "linux")]
        r.register(Box::new(ProcessFigures::new()?))?;
        Ok(())
    }

    /// Counts a closed connection under its ending: a close code label, `client_closed` or
    /// `connection_lost`.
    pub(crate) fn connections_closed(&self, ending: &str) {
        self.connections_closed.with_label_values(&[ending]).inc();
        if ending == CloseCode::SlowConsumer.label() {
            self.slow_consumers_closed.inc();
        }
    }

    pub(crate) fn limit_refused(&self, limit: &str) {
        self.limit_refusals.with_label_values(&[limit]).inc();
    }

    pub(crate) fn frame_in(&self, action: &str) {
        self.frames_in.with_label_values(&[action]).inc();
    }

    pub(crate) fn frame_out(&self, kind: &str) {
        self.frames_out.with_label_values(&[kind]).inc();
    }

    pub(crate) fn error_sent(&self, code: ErrorCode) {
        self.errors.with_label_values(&[code.as_str()]).inc();
        self.frame_out("error");
    }

    /// The counter of delivered publications, resolved once for the hub's fan-out loop.
    pub(crate) fn message_frames_out(&self) -> IntCounter {
        self.frames_out.with_label_values(&["message"])
    }

    /// Connections closed, by ending: written only through [`Metrics::connections_closed`],
    /// read by the status page.
    pub(crate) fn closed_by_ending(&self) -> &IntCounterVec {
        &self.connections_closed
    }

    /// Error replies, by code: written only through [`Metrics::error_sent`], read by the status
    /// page.
    pub(crate) fn errors_by_code(&self) -> &IntCounterVec {
        &self.errors
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            log::error!(error:% = error; "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// The process's figures (CPU, memory, open files, threads), read from /proc once per scrape
/// and exported under the standard `process_*` names and again under the names this gateway
/// exported before them (`agenticai_ws_process_*`): dashboards, alarms and the load generator's
/// older builds read those, and tests/operations.rs pins them. New work reads `process_*`.
#[cfg(target_os = "linux")]
struct ProcessFigures {
    collector: prometheus::process_collector::ProcessCollector,
    /// The collector's descriptions, then the same under the older names.
    descs: Vec<prometheus::core::Desc>,
}

#[cfg(target_os = "linux")]
impl ProcessFigures {
    fn new() -> prometheus::Result<Self> {
        use prometheus::core::{Collector, Desc};
        let collector = prometheus::process_collector::ProcessCollector::for_self();
        let standard: Vec<Desc> = collector.desc().into_iter().cloned().collect();
        let older = standard
            .iter()
            .map(|desc| {
                let name = format!("{NAMESPACE}_{}", desc.fq_name);
                Desc::new(name, desc.help.clone(), desc.variable_labels.clone(), Default::default())
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(ProcessFigures { collector, descs: standard.into_iter().chain(older).collect() })
    }
}

#[cfg(target_os = "linux")]
impl prometheus::core::Collector for ProcessFigures {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let standard = self.collector.collect();
        let older: Vec<_> = standard
            .iter()
            .map(|family| {
                let mut renamed = family.clone();
                renamed.set_name(format!("{NAMESPACE}_{}", family.name()));
                renamed
            })
            .collect();
        standard.into_iter().chain(older).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics_with_process_figures() {
        let metrics = Metrics::new().unwrap();
        metrics.connections_closed(CloseCode::SlowConsumer.label());
        let text = metrics.render();
        assert!(text.contains("agenticai_ws_connections_closed_total{code=\"3008_slow_consumer\"} 1"));
        assert!(text.contains("agenticai_ws_slow_consumers_closed_total 1"));
        assert!(text.contains("agenticai_ws_process_resident_memory_bytes"));
    }

    #[test]
    fn renders_standard_process_names_build_info_and_the_engine() {
        let metrics = Metrics::new().unwrap();
        metrics.engine_is("memory");
        let text = metrics.render();
        assert!(text.contains("agenticai_ws_engine_info{engine=\"memory\"} 1"), "{text}");
        let build_info = format!(
            "agenticai_ws_build_info{{commit=\"{}\",version=\"{}\"}} 1",
            env!("AGENTICAI_WS_COMMIT"),
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build_info), "{text}");
        #[cfg(target_os = "linux")]
        for name in ["process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"] {
            let value = |name: &str| text.lines().find_map(|line| line.strip_prefix(&format!("{name} ")));
            let standard = value(name).unwrap_or_else(|| panic!("no {name}: {text}"));
            // One read of /proc per scrape, under both names.
            assert_eq!(value(&format!("{NAMESPACE}_{name}")), Some(standard), "{text}");
        }
    }
}
