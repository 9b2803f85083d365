//! Agent streams' settings: the rollup window, the idle timeout, and the bounds of each stream.

use std::{num::NonZeroUsize, time::Duration};

use super::values::{greater_than_zero, DurationSetting};

/// Agent streams ([`crate::streams`]): how appends are rolled up for viewers and how far a
/// stream may grow.
#[derive(Clone, Debug, clap::Args)]
pub struct StreamSettings {
    /// Milliseconds a stream's appends are gathered into one `stream_append` frame for viewers:
    /// the first append to a quiet stream goes out at once, later ones within the window go out
    /// together at its end. 0 = every append alone.
    #[arg(
        long = "stream-rollup-ms",
        value_name = "STREAM_ROLLUP_MS",
        env = "STREAM_ROLLUP_MS",
        default_value = "40",
        value_parser = DurationSetting::MILLISECONDS
    )]
    pub stream_rollup: Duration,

    /// Seconds without an append or an end after which a stream is ended by the gateway with
    /// status `abandoned` (its agent died).
    #[arg(
        long = "stream-idle-timeout-secs",
        value_name = "STREAM_IDLE_TIMEOUT_SECS",
        env = "STREAM_IDLE_TIMEOUT_SECS",
        default_value = "300",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub stream_idle_timeout: Duration,

    /// Seconds an agent has to end its stream after a `cancel` before the gateway ends it as
    /// `cancelled` itself (0 = at once).
    #[arg(
        long = "stream-cancel-grace-secs",
        value_name = "STREAM_CANCEL_GRACE_SECS",
        env = "STREAM_CANCEL_GRACE_SECS",
        default_value = "30",
        value_parser = DurationSetting::SECONDS
    )]
    pub stream_cancel_grace: Duration,

    /// Bytes of text (UTF-8) one stream may hold; an append past it is refused with
    /// `stream_too_large`.
    #[arg(long, env = "STREAM_MAX_BYTES", default_value = "1048576", value_parser = greater_than_zero::<NonZeroUsize>)]
    pub stream_max_bytes: NonZeroUsize,

    /// Streams open at once in one project; a start past it is refused with `too_many_streams`.
    #[arg(
        long,
        env = "STREAM_MAX_OPEN_PER_PROJECT",
        default_value = "32",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub stream_max_open_per_project: NonZeroUsize,

    /// Appends a second one stream accepts, across tasks; past it an append gets `rate_limited`
    /// until the next second. 0 = no limit.
    #[arg(long, env = "STREAM_MAX_APPENDS_PER_SEC", default_value_t = 500)]
    pub stream_max_appends_per_sec: u32,
}
