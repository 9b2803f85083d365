//! The cross-task engine on Redis (ElastiCache for Valkey/Redis in AWS), Centrifugo's design:
//!
//! - **Publish** runs one Lua script, atomically: take the project's next offset (`INCR`), append
//!   the publication to the project's stream (`XADD` with id `<offset>-0`, trimmed to
//!   HISTORY_SIZE), refresh the keys' expiry (HISTORY_TTL_SECS), and `PUBLISH` it on the
//!   project's channel as `<offset>:<epoch>:<published-at-ms>:<frame>`.
//! - **Fan-out**: every task's [`subscriber::RedisSubscriber`] subscribes to the channels of the
//!   projects it has local subscribers for, and hands each message to its hub in channel order.
//! - **History and resume**: [`RedisEngine::recover`] reads the stream after an offset, with the
//!   project's epoch and top offset, in one script.
//!
//! Keys per project P: `agenticai:{P}:stream`, `:offset`, `:epoch`; channel `agenticai:{P}:pub`.
//! The epoch is created at random when absent, so losing Redis data (or expiry) changes it.

pub mod subscriber;

use std::sync::Arc;

use bytestring::ByteString;
use redis::{aio::ConnectionManager, RedisResult, Script};

use crate::{
    history::{new_epoch, recover, with_position, Entries, HistorySettings, Recovery},
    protocol::StreamPosition,
};

const PUBLISH_SCRIPT: &str = r#"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[3], epoch)
  redis.call('DEL', KEYS[1], KEYS[2])
end
local offset = redis.call('INCR', KEYS[2])
if tonumber(ARGV[2]) > 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], offset .. '-0', 'f', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[5], offset .. ':' .. epoch .. ':' .. ARGV[6] .. ':' .. ARGV[1])
return {offset, epoch}
"#;

const READ_SCRIPT: &str = r#"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[3], epoch, 'EX', ARGV[4])
  redis.call('DEL', KEYS[1], KEYS[2])
end
local top = tonumber(redis.call('GET', KEYS[2]) or '0')
local entries = {}
if ARGV[1] ~= '' then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
end
return {epoch, top, entries}
"#;

/// A publication as it travels on a project's channel.
#[derive(Debug, PartialEq, Eq)]
pub struct ChannelMessage<'a> {
    pub position: StreamPosition,
    pub published_at_ms: i64,
    pub frame: &'a str,
}

impl<'a> ChannelMessage<'a> {
    pub fn parse(payload: &'a str) -> Option<Self> {
        let mut parts = payload.splitn(4, ':');
        let offset = parts.next()?.parse().ok()?;
        let epoch = parts.next()?.to_owned();
        let published_at_ms = parts.next()?.parse().ok()?;
        let frame = parts.next()?;
        Some(ChannelMessage { position: StreamPosition { offset, epoch }, published_at_ms, frame })
    }
}

/// One XRANGE entry: its id (`<offset>-0`) and its field/value pairs.
type StreamEntry = (String, Vec<(String, String)>);

#[derive(Clone)]
pub struct RedisEngine {
    connection: ConnectionManager,
    client: redis::Client,
    publish_script: Arc<Script>,
    read_script: Arc<Script>,
    settings: HistorySettings,
}

fn keys(project_id: &str) -> [String; 3] {
    [
        format!("agenticai:{{{project_id}}}:stream"),
        format!("agenticai:{{{project_id}}}:offset"),
        format!("agenticai:{{{project_id}}}:epoch"),
    ]
}

/// The channel a project's publications travel on.
pub fn channel(project_id: &str) -> String {
    format!("agenticai:{{{project_id}}}:pub")
}

/// The project a channel belongs to.
pub fn project_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("agenticai:{")?.strip_suffix("}:pub")
}

impl RedisEngine {
    /// Connects (the connection manager reconnects by itself afterwards).
    pub async fn connect(url: &str, settings: HistorySettings) -> anyhow::Result<Self> {
        // The URL may hold a password: only its redacted form reaches a message.
        let shown = crate::config::redact_url(url);
        let client = redis::Client::open(url).map_err(|error| anyhow::anyhow!("REDIS_URL: {shown}: {error}"))?;
        let connection = tokio::time::timeout(std::time::Duration::from_secs(10), client.get_connection_manager())
            .await
            .map_err(|_| anyhow::anyhow!("REDIS_URL: no answer from {shown} within 10 s"))?
            .map_err(|error| anyhow::anyhow!("REDIS_URL: cannot connect to {shown}: {error}"))?;
        Ok(RedisEngine {
            connection,
            client,
            publish_script: Arc::new(Script::new(PUBLISH_SCRIPT)),
            read_script: Arc::new(Script::new(READ_SCRIPT)),
            settings,
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Appends to the project's history and publishes to every task; the publication's position.
    pub async fn publish(&self, project_id: &str, frame: &str) -> RedisResult<StreamPosition> {
        let [stream, offset, epoch] = keys(project_id);
        let mut connection = self.connection.clone();
        let (offset, epoch): (u64, String) = self
            .publish_script
            .key(stream)
            .key(offset)
            .key(epoch)
            .arg(frame)
            .arg(self.settings.size)
            .arg(self.settings.ttl.as_secs().max(1))
            .arg(new_epoch())
            .arg(channel(project_id))
            .arg(chrono::Utc::now().timestamp_millis())
            .invoke_async(&mut connection)
            .await?;
        Ok(StreamPosition { offset, epoch })
    }

    /// The project's position and up to HISTORY_SIZE publications after `after` (none when
    /// `after` is None), oldest first, with positions.
    async fn read(
        &self,
        project_id: &str,
        after: Option<u64>,
    ) -> RedisResult<(StreamPosition, Vec<(u64, ByteString)>)> {
        let [stream, offset, epoch] = keys(project_id);
        let mut connection = self.connection.clone();
        let (epoch, top, entries): (String, u64, Vec<StreamEntry>) = self
            .read_script
            .key(stream)
            .key(offset)
            .key(epoch)
            .arg(after.map(|offset| offset.to_string()).unwrap_or_default())
            .arg(self.settings.size.max(1))
            .arg(new_epoch())
            .arg(self.settings.ttl.as_secs().max(1))
            .invoke_async(&mut connection)
            .await?;
        let top = StreamPosition { offset: top, epoch };
        let entries = entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let offset: u64 = id.split('-').next()?.parse().ok()?;
                let (_, frame) = fields.into_iter().find(|(name, _)| name == "f")?;
                let position = StreamPosition { offset, epoch: top.epoch.clone() };
                Some((offset, with_position(&frame, &position)))
            })
            .collect();
        Ok((top, entries))
    }

    /// What a client resuming from `since` missed (no replay without `since`).
    pub async fn recover(&self, project_id: &str, since: Option<&StreamPosition>) -> RedisResult<Recovery> {
        let (top, entries) = self.read(project_id, since.map(|since| since.offset)).await?;
        Ok(recover(since, top, entries))
    }

    /// Up to `limit` retained publications after `since_offset`, oldest first.
    pub async fn page(
        &self,
        project_id: &str,
        since_offset: u64,
        limit: usize,
    ) -> RedisResult<(StreamPosition, Entries)> {
        let (top, mut entries) = self.read(project_id, Some(since_offset)).await?;
        entries.truncate(limit);
        Ok((top, entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_messages_parse_back() {
        let message = ChannelMessage::parse(r#"12:ab12cd34:1700000000000:{"type":"message","data":"a:b"}"#).unwrap();
        assert_eq!(message.position, StreamPosition { offset: 12, epoch: "ab12cd34".into() });
        assert_eq!(message.published_at_ms, 1_700_000_000_000);
        assert_eq!(message.frame, r#"{"type":"message","data":"a:b"}"#);
        assert!(ChannelMessage::parse("garbage").is_none());
    }

    #[test]
    fn channels_name_their_project() {
        assert_eq!(project_of_channel(&channel("proj-1")), Some("proj-1"));
        assert_eq!(project_of_channel("other"), None);
    }
}
