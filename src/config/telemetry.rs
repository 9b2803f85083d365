//! What the gateway reports about itself: the log format and CloudWatch EMF lines.

use std::time::Duration;

use clap::ValueEnum;

use super::values::DurationSetting;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Readable text for a terminal.
    Text,
    /// One JSON object per line, for CloudWatch Logs.
    Json,
}

/// The settings of [`crate::logging`] and [`crate::emf`].
#[derive(Clone, Debug, clap::Args)]
pub struct TelemetrySettings {
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Seconds between CloudWatch Embedded Metric Format lines on stdout (0 = off).
    #[arg(
        long = "emf-interval-secs",
        value_name = "EMF_INTERVAL_SECS",
        env = "EMF_INTERVAL_SECS",
        default_value = "0",
        value_parser = DurationSetting::SECONDS
    )]
    pub emf_interval: Duration,

    /// Value of the ServiceName dimension of the EMF metrics.
    #[arg(long, env = "SERVICE_NAME", default_value = "agenticai-websocket")]
    pub service_name: String,
}
