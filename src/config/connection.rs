//! One WebSocket connection's settings: heartbeat, frame and queue bounds, requests in flight.

use std::{num::NonZeroUsize, time::Duration};

use super::{
    values::{greater_than_zero, DurationSetting},
    ConfigError,
};
use crate::protocol::request::ParseLimits;

/// The longest WRITE_DELAY_MS accepted.
const MAX_WRITE_DELAY: Duration = Duration::from_secs(1);

/// The session's own settings ([`crate::session`]); [`crate::gateway::SessionSettings`] adds
/// what it takes from other groups.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct ConnectionSettings {
    /// Seconds between protocol-level pings (below the ALB's idle timeout).
    #[arg(
        long = "ping-interval-secs",
        value_name = "PING_INTERVAL_SECS",
        env = "PING_INTERVAL_SECS",
        default_value = "25",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub ping_interval: Duration,

    /// Seconds of silence after which a peer is closed.
    #[arg(
        long = "client-timeout-secs",
        value_name = "CLIENT_TIMEOUT_SECS",
        env = "CLIENT_TIMEOUT_SECS",
        default_value = "60",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub client_timeout: Duration,

    /// Largest client frame accepted, in bytes; larger frames close the connection with 1009.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value = "262144", value_parser = greater_than_zero::<NonZeroUsize>)]
    pub max_frame_bytes: NonZeroUsize,

    /// Messages a connection's outbound queue may hold before the client is closed as slow (3008).
    #[arg(
        long,
        env = "OUTBOUND_QUEUE_MESSAGES",
        default_value = "1024",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub outbound_queue_messages: NonZeroUsize,

    /// Bytes a connection's outbound queue may hold before the client is closed as slow (3008).
    #[arg(
        long,
        env = "OUTBOUND_QUEUE_BYTES",
        default_value = "1048576",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub outbound_queue_bytes: NonZeroUsize,

    /// Milliseconds the first frame queued for a connection waits for more to share its write
    /// (0 = written at once). Clients that receive many frames per second then cost less CPU per
    /// delivery (fewer, larger writes), at the price of up to this much added latency. The same
    /// trade as Centrifugo's `client.write_delay`; at most 1000.
    #[arg(
        long = "write-delay-ms",
        value_name = "WRITE_DELAY_MS",
        env = "WRITE_DELAY_MS",
        default_value = "0",
        value_parser = DurationSetting::MILLISECONDS.at_most(MAX_WRITE_DELAY, "a longer delay only stalls clients")
    )]
    pub write_delay: Duration,

    /// Longest project id accepted, in bytes.
    #[arg(long, env = "MAX_PROJECT_ID_BYTES", default_value = "128", value_parser = greater_than_zero::<NonZeroUsize>)]
    pub max_project_id_bytes: NonZeroUsize,

    /// Requests (forwards, publishes) one connection may have in flight; more get `busy`.
    #[arg(
        long,
        env = "MAX_INFLIGHT_PER_CONNECTION",
        default_value = "256",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub max_inflight_per_connection: NonZeroUsize,
}

impl ConnectionSettings {
    /// A client that stays idle between two pings must not be taken for a dead one.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.client_timeout <= self.ping_interval {
            return Err(ConfigError::Invalid {
                variable: "CLIENT_TIMEOUT_SECS",
                reason: format!(
                    "must be longer than PING_INTERVAL_SECS ({:?}), or every idle client is closed",
                    self.ping_interval
                ),
            });
        }
        Ok(())
    }

    /// What a request (a frame, or an HTTP API path) may carry.
    pub(crate) fn parse_limits(&self) -> ParseLimits {
        ParseLimits { max_project_id_bytes: self.max_project_id_bytes.get() }
    }
}
