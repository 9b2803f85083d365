//! The running gateway's shared parts: actor addresses, the engine, the publish path, the access
//! policy, metrics and settings. One per server; sessions and HTTP handlers hold an `Arc` of it.

use std::{sync::Arc, time::Duration};

use actix::Addr;

use crate::{
    access::AccessPolicy,
    dispatcher::QueueDispatcher,
    engine::Engine,
    hub::Hub,
    lifecycle::Lifecycle,
    metrics::Metrics,
    persistence::{Persistence, RecordSink},
    protocol::request::ParseLimits,
    publish::Publisher,
    stats::StatsHistory,
};

/// Per-connection settings, from the configuration.
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

pub(crate) struct Gateway {
    pub hub: Addr<Hub>,
    pub dispatcher: Addr<QueueDispatcher>,
    pub persistence: Addr<Persistence>,
    pub records: RecordSink,
    pub publisher: Publisher,
    /// History, positions and other tasks (memory, or Redis with REDIS_URL).
    pub engine: Arc<dyn Engine>,
    /// Bytes of publications one history answer carries at most (HISTORY_PAGE_BYTES).
    pub history_page_bytes: usize,
    pub policy: AccessPolicy,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Lifecycle,
    pub session: SessionSettings,
    /// The status page's figures, sampled by the task [`crate::server::Server::run`] spawns.
    pub stats: Arc<StatsHistory>,
}
