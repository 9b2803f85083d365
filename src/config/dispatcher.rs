//! How the queue dispatcher batches forwards and how long it tries.

use std::{num::NonZeroUsize, time::Duration};

use super::values::{greater_than_zero, DurationSetting};

/// The queue dispatcher's settings ([`crate::dispatcher`]).
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct DispatcherSettings {
    /// Longest a batch waits for more entries before it is sent to SQS, in milliseconds. 20 ms
    /// fills batches at 2,000 forwards/s over four queues (5 ms gave 5 entries per call) and
    /// adds at most 20 ms to a confirmation when traffic is light. 0 = each batch is sent with
    /// what is there.
    #[arg(
        long = "sqs-batch-linger-ms",
        value_name = "SQS_BATCH_LINGER_MS",
        env = "SQS_BATCH_LINGER_MS",
        default_value = "20",
        value_parser = DurationSetting::MILLISECONDS
    )]
    pub sqs_batch_linger: Duration,

    /// Largest SendMessageBatch payload (and single message), in bytes.
    #[arg(
        long,
        env = "SQS_MAX_BATCH_BYTES",
        default_value = "1048576",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub sqs_max_batch_bytes: NonZeroUsize,

    /// A forward not accepted by SQS within this many seconds is reported as `forward_failed`.
    #[arg(
        long = "forward-deadline-secs",
        value_name = "FORWARD_DEADLINE_SECS",
        env = "FORWARD_DEADLINE_SECS",
        default_value = "10",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub forward_deadline: Duration,

    /// Forwards waiting in the queue dispatcher before clients get `busy`.
    #[arg(
        long,
        env = "DISPATCHER_MAX_PENDING",
        default_value = "10000",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub dispatcher_max_pending: NonZeroUsize,
}
