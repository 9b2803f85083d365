//! Where records and forwards are kept: the DynamoDB table, or DATA_DIR's record store and
//! spool; how many records wait for a slow table, and how long they live.

use std::{
    num::{NonZeroU64, NonZeroUsize},
    path::PathBuf,
    time::Duration,
};

use super::values::{greater_than_zero, non_empty, DurationSetting};

/// The stores' settings: the persistence actor's ([`crate::persistence`]) and the local spool's
/// ([`crate::dispatcher::spool`]).
#[derive(Clone, Debug, clap::Args)]
pub struct StorageSettings {
    /// DynamoDB table for connection and audit records; unset = local record store in DATA_DIR.
    #[arg(long, env = "DYNAMODB_TABLE_NAME")]
    pub dynamodb_table_name: Option<String>,

    /// Directory of the local spool and record store used when AWS is not configured.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Bytes the local spool's four files (DATA_DIR/spool) may hold together; past it forwards
    /// are refused with `forward_failed` until an operator empties the spool.
    #[arg(long, env = "SPOOL_MAX_BYTES", default_value = "1073741824", value_parser = greater_than_zero::<NonZeroU64>)]
    pub spool_max_bytes: NonZeroU64,

    /// Bytes of the local record store's file (DATA_DIR/records/records.jsonl) before it is
    /// rotated to records.1.jsonl, replacing the previous one: the store keeps the newest
    /// RECORDS_MAX_BYTES to twice that.
    #[arg(long, env = "RECORDS_MAX_BYTES", default_value = "268435456", value_parser = greater_than_zero::<NonZeroU64>)]
    pub records_max_bytes: NonZeroU64,

    /// Records the persistence actor buffers while the table is slow or down; beyond it they are
    /// dropped, counted and logged.
    #[arg(
        long,
        env = "PERSISTENCE_BUFFER_RECORDS",
        default_value = "50000",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub persistence_buffer_records: NonZeroUsize,

    /// Days a record lives before DynamoDB's TTL removes it (0 is refused: every record would
    /// be expired as it is written).
    #[arg(
        long = "record-ttl-days",
        value_name = "RECORD_TTL_DAYS",
        env = "RECORD_TTL_DAYS",
        default_value = "30",
        value_parser = DurationSetting::DAYS.positive()
    )]
    pub record_ttl: Duration,
}

impl StorageSettings {
    /// The DynamoDB table, when one is configured.
    pub fn table_name(&self) -> Option<&str> {
        non_empty(&self.dynamodb_table_name)
    }
}
