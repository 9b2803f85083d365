//! The engine's settings: Redis or memory, how much history each project keeps, presence.

use std::{num::NonZeroUsize, time::Duration};

use super::{
    values::{greater_than_zero, non_empty, redact_url, DurationSetting},
    ConfigError,
};

/// The engine's settings ([`crate::engine`]): which one runs, its history and its presence.
#[derive(Clone, Debug, clap::Args)]
pub struct EngineSettings {
    /// Redis (ElastiCache for Valkey/Redis) for cross-task fan-out and history; unset = single
    /// task, history in memory.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// REDIS_URL is a Redis Cluster (ElastiCache cluster mode): its seed nodes, comma separated
    /// (a configuration endpoint is one), so losing one seed does not stop a restart; each
    /// project's traffic then stays on the shard owning its slot (sharded pub/sub, Redis 7+).
    #[arg(long, env = "REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_cluster: bool,

    /// Publications each project's history keeps (for resume and GET .../history); 0 is
    /// refused, since without history no resume could recover anything.
    #[arg(
        long,
        env = "HISTORY_SIZE",
        default_value = "1000",
        value_parser = |value: &str| greater_than_zero::<NonZeroUsize>(value).map(NonZeroUsize::get)
    )]
    pub history_size: usize,

    /// Seconds without a publication after which a project's history is forgotten (its epoch
    /// then changes).
    #[arg(
        long = "history-ttl-secs",
        value_name = "HISTORY_TTL_SECS",
        env = "HISTORY_TTL_SECS",
        default_value = "3600",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub history_ttl: Duration,

    /// Projects whose history the in-memory store keeps (single-task mode); the least recently
    /// published are forgotten first.
    #[arg(
        long,
        env = "HISTORY_MAX_PROJECTS",
        default_value = "10000",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub history_max_projects: NonZeroUsize,

    /// Bytes of publications each project's history keeps (with HISTORY_SIZE, whichever is
    /// reached first); the oldest go first, the newest is always kept.
    #[arg(long, env = "HISTORY_MAX_BYTES", default_value = "8388608", value_parser = greater_than_zero::<NonZeroUsize>)]
    pub history_max_bytes: NonZeroUsize,

    /// Bytes of publications the in-memory store keeps across all projects (single-task mode);
    /// past it, the retained publications of the least recently published projects are dropped.
    #[arg(
        long,
        env = "HISTORY_MAX_TOTAL_BYTES",
        default_value = "268435456",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub history_max_total_bytes: NonZeroUsize,

    /// Bytes of publications one history answer carries at most (at least one publication): a
    /// GET .../history page (its `next_since` says where the next starts), and each page a
    /// resume's replay reads (at most half of OUTBOUND_QUEUE_BYTES).
    #[arg(long, env = "HISTORY_PAGE_BYTES", default_value = "1048576", value_parser = greater_than_zero::<NonZeroUsize>)]
    pub history_page_bytes: NonZeroUsize,

    /// Keep presence (who is subscribed to each project, on every task) and answer `presence`,
    /// `presence_stats` and `join_leave`.
    #[arg(long, env = "PRESENCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub presence: bool,

    /// With Redis: seconds a presence member outlives its task's last refresh (each task
    /// refreshes its members every third of it), so a task killed without a word loses its
    /// members within this time.
    #[arg(
        long = "presence-ttl-secs",
        value_name = "PRESENCE_TTL_SECS",
        env = "PRESENCE_TTL_SECS",
        default_value = "60",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub presence_ttl: Duration,
}

impl EngineSettings {
    /// REDIS_URL, when set, is one the Redis client can connect to (with REDIS_CLUSTER, each of
    /// its seeds is).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for url in self.redis_seeds() {
            redis::IntoConnectionInfo::into_connection_info(url).map_err(|error| ConfigError::Invalid {
                variable: "REDIS_URL",
                reason: format!(
                    "{} is not a Redis URL ({error}); expected redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://...",
                    redact_url(url)
                ),
            })?;
        }
        Ok(())
    }

    /// The URLs REDIS_URL names: itself, or with REDIS_CLUSTER each comma-separated seed node.
    pub fn redis_seeds(&self) -> Vec<&str> {
        match self.redis_url() {
            None => Vec::new(),
            Some(url) if self.redis_cluster => url.split(',').map(str::trim).filter(|seed| !seed.is_empty()).collect(),
            Some(url) => vec![url],
        }
    }

    /// Redis, when configured; otherwise the engine is the memory one.
    pub fn redis_url(&self) -> Option<&str> {
        non_empty(&self.redis_url)
    }
}
