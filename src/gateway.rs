//! The running gateway's shared parts: actor addresses, the engine, the publish path, the access
//! policy, metrics and settings. One per server; sessions and HTTP handlers hold an `Arc` of it.

use std::{sync::Arc, time::Duration};

use actix::Addr;

use crate::{
    access::AccessPolicy,
    approvals::Approvals,
    background::BackgroundLoops,
    config::Config,
    dispatcher::QueueDispatcher,
    engine::Engine,
    hub::Hub,
    lifecycle::{Drained, Lifecycle},
    metrics::Metrics,
    persistence::{Persistence, RecordSink},
    protocol::request::ParseLimits,
    publish::Publisher,
    stats::StatsHistory,
    streams::Streams,
};

/// Longest a draining session waits for its in-flight forwards before closing.
const DRAIN_INFLIGHT_GRACE: Duration = Duration::from_secs(5);

/// Per-connection settings: the connection group's, and what a session takes from other groups
/// (the access policy's token timing, the HTTP server's body timeout, presence, the dispatcher's
/// deadline).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionSettings {
    pub ping_interval: Duration,
    pub client_timeout: Duration,
    pub max_frame_bytes: usize,
    pub outbound_queue_messages: usize,
    pub outbound_queue_bytes: usize,
    /// How long a connection's first queued frame waits for others to share its write.
    pub write_delay: Duration,
    pub max_inflight: usize,
    pub parse_limits: ParseLimits,
    /// How long a draining session waits for its in-flight forwards before closing anyway.
    pub drain_inflight_grace: Duration,
    /// How long an HTTP request body may take to arrive (HTTP_REQUEST_TIMEOUT_SECS).
    pub http_body_timeout: Duration,
    /// How long a connection without a token may take to authenticate (AUTH_TIMEOUT_SECS).
    pub auth_timeout: Duration,
    /// Clock skew allowed past a token's `exp` (JWT_LEEWAY_SECS).
    pub jwt_leeway: Duration,
    /// Whether presence is kept (PRESENCE).
    pub presence: bool,
}

impl SessionSettings {
    pub(crate) fn configure(config: &Config) -> Self {
        let connection = &config.connection;
        SessionSettings {
            ping_interval: connection.ping_interval,
            client_timeout: connection.client_timeout,
            max_frame_bytes: connection.max_frame_bytes.get(),
            outbound_queue_messages: connection.outbound_queue_messages.get(),
            outbound_queue_bytes: connection.outbound_queue_bytes.get(),
            write_delay: connection.write_delay,
            max_inflight: connection.max_inflight_per_connection.get(),
            parse_limits: connection.parse_limits(),
            drain_inflight_grace: DRAIN_INFLIGHT_GRACE.min(config.dispatcher.forward_deadline),
            http_body_timeout: config.server.http_request_timeout,
            auth_timeout: config.access.auth_timeout,
            jwt_leeway: config.access.jwt_leeway,
            presence: config.engine.presence,
        }
    }
}

pub(crate) struct Gateway {
    pub hub: Addr<Hub>,
    pub dispatcher: Addr<QueueDispatcher>,
    pub persistence: Addr<Persistence>,
    pub records: RecordSink,
    pub publisher: Publisher,
    /// The agent-stream path (start, append, end, reads).
    pub streams: Streams,
    /// Human approvals (request, decide, expiry and redelivery).
    pub approvals: Approvals,
    /// History, positions and other tasks (memory, or Redis with REDIS_URL).
    pub engine: Arc<dyn Engine>,
    /// Bytes of publications one history answer carries at most (HISTORY_PAGE_BYTES).
    pub history_page_bytes: usize,
    pub policy: AccessPolicy,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Lifecycle,
    /// The agent-updates consumer: stopped first by the drain, so nothing is published after it.
    pub intake: BackgroundLoops,
    /// The other loops beside the actors (stats, EMF, API-budget sweep, JWKS refresh): stopped
    /// last by the drain.
    pub loops: BackgroundLoops,
    pub session: SessionSettings,
    /// The status page's figures, sampled by the task [`crate::server::Server::run`] spawns.
    pub stats: Arc<StatsHistory>,
}

impl Gateway {
    /// What the drain stops ([`crate::lifecycle::drain`]).
    pub(crate) fn drained(&self) -> Drained<'_> {
        Drained {
            lifecycle: &self.lifecycle,
            metrics: &self.metrics,
            intake: &self.intake,
            hub: &self.hub,
            dispatcher: &self.dispatcher,
            engine: &*self.engine,
            persistence: &self.persistence,
            records: &self.records,
            loops: &self.loops,
        }
    }
}
