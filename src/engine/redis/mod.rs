//! The Redis engine (ElastiCache for Valkey/Redis in AWS), Centrifugo's design:
//!
//! - **Publish** runs one Lua script, atomically: take the project's next offset (`INCR`), append
//!   the publication to the project's stream (`XADD` with id `<offset>-0`), count its bytes in
//!   the project's `:bytes` key, trim the oldest entries while the stream is over HISTORY_SIZE
//!   or HISTORY_MAX_BYTES (`XTRIM MINID`; the newest always stays), refresh the keys' expiry
//!   (HISTORY_TTL_SECS), and `PUBLISH` it on the project's channel as
//!   `<offset>:<epoch>:<published-at-ms>:<frame>`.
//!
//!   Why a counter key: a stream does not know its bytes, and summing them at each publish
//!   would read the whole history every time. The counter is kept in the same script as the
//!   `XADD` and the trim, so it cannot drift from the stream; a counter that is missing while
//!   the stream exists (an upgrade from a version without it, or an eviction policy that took
//!   it) is summed once from the stream. Trimming reads only the entries it removes (usually
//!   one), and `XTRIM MINID` with an exact id removes whole entries without rewriting the
//!   others.
//! - **Fan-out**: every task's subscriber ([`subscriber`]) subscribes to the channels of the
//!   projects the hub follows ([`Engine::subscribe`]), and hands each message to
//!   [`LocalDelivery`] in channel order, once.
//! - **History and resume**: [`RedisEngine::read`] reads one page of the stream after an offset
//!   (at most a count and a number of bytes, summed inside the script so a page of large
//!   publications never crosses the network whole), with the project's epoch and top offset,
//!   in one script.
//! - **Presence**: [`presence`] (a hash and a sorted set by expiry per project, written by each
//!   task's presence writer, refreshed on a timer); join and leave events travel on the
//!   project's channel as `join:<connection id>:<frame>` and `leave:<connection id>:<frame>`.
//! - **While Redis is down**: see the contracts in [`crate::engine`]; [`subscriber::RedisHealth`]
//!   is what [`Engine::health`] reads.
//! - **Its own loops** (the subscriber and the presence writer) start with [`Engine::start`] and
//!   stop on [`Engine::close`]: one cancellation token, and their join handles to wait on.
//!
//! - **On a Redis Cluster** (REDIS_CLUSTER=true): [`cluster`] (commands routed by slot, the
//!   scripts publishing with `SPUBLISH`) and [`sharded_subscriber`] (`SSUBSCRIBE`, a connection
//!   per shard); approvals' cross-project sets become per project ([`approvals`]). Whether
//!   Redis is up, and each shard's series, come from [`shards`]' survey.
//!
//! Keys per project P: `agenticai:{P}:stream`, `:offset`, `:epoch`, `:bytes`; channel
//! `agenticai:{P}:pub`, all in P's hash slot.
//! The epoch is created at random when absent, so losing Redis data (or expiry) changes it.

pub(crate) mod approvals;
pub(crate) mod cluster;
pub(crate) mod presence;
pub(crate) mod sharded_subscriber;
pub(crate) mod shards;
pub(crate) mod streams;
pub(crate) mod subscriber;

use std::{
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use bytestring::ByteString;
use futures_util::future::{BoxFuture, FutureExt};
use redis::{IntoConnectionInfo, RedisResult, Script};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    approvals::{AskOutcome, DecideOutcome, Undelivered},
    positions::{new_epoch, recover, Entries, HistorySettings, Recovery},
    presence::{Member, Presence},
    streams::{Append, AppendOutcome, CancelOutcome, End, EndOutcome, StartOutcome, StreamLimits, StreamSnapshot},
    Engine, EngineError, EngineFuture, Health, LocalDelivery, Published,
};
use crate::{
    metrics::Metrics,
    protocol::{
        approvals::{ApprovalAsk, Decision},
        request::ProjectId,
        streams::{StreamId, StreamMeta},
        StreamPosition,
    },
};
use cluster::{CommandConnection, Seeds};
use presence::{Command, PresenceStore};
use subscriber::{Interest, RedisHealth, Subscriptions};

/// `publish_entry(keys, kept, live, size, ttl, new_epoch, channel, published_at, max_bytes)`:
/// the one step every publication takes, shared by the publish script and the stream scripts.
/// `keys`: stream, offset, epoch, bytes (the first four of the script's KEYS). `kept` goes into
/// the history and `live` onto the channel (the same frame, but for a stream's end, kept with its
/// final text). Returns the offset and the epoch.
const PUBLISH_FUNCTION: &str = r#"
local function publish_entry(keys, kept, live, size, ttl, new_epoch, channel, published_at, max_bytes)
  local epoch = redis.call('GET', keys[3])
  if not epoch then
    epoch = new_epoch
    redis.call('SET', keys[3], epoch)
    redis.call('DEL', keys[1], keys[2], keys[4])
  end
  local offset = redis.call('INCR', keys[2])
  if size > 0 then
    if redis.call('EXISTS', keys[4]) == 0 then
      local bytes, cursor = 0, '-'
      while true do
        local batch = redis.call('XRANGE', keys[1], cursor, '+', 'COUNT', 100)
        if #batch == 0 then break end
        for _, entry in ipairs(batch) do bytes = bytes + #entry[2][2] end
        cursor = '(' .. batch[#batch][1]
      end
      redis.call('SET', keys[4], bytes)
    end
    redis.call('XADD', keys[1], offset .. '-0', 'f', kept)
    local bytes = redis.call('INCRBY', keys[4], #kept)
    local length = redis.call('XLEN', keys[1])
    if length > size or bytes > max_bytes then
      -- Oldest first, the entries to drop, up to the first one to keep (the newest at least).
      local keep, cursor = nil, '-'
      while keep == nil do
        local batch = redis.call('XRANGE', keys[1], cursor, '+', 'COUNT', 16)
        if #batch == 0 then break end
        for _, entry in ipairs(batch) do
          if length <= 1 or (length <= size and bytes <= max_bytes) then
            keep = entry[1]
            break
          end
          bytes = bytes - #entry[2][2]
          length = length - 1
          cursor = '(' .. entry[1]
        end
      end
      if keep then
        redis.call('XTRIM', keys[1], 'MINID', keep)
        redis.call('SET', keys[4], bytes)
      end
    end
    redis.call('EXPIRE', keys[1], ttl)
    redis.call('EXPIRE', keys[4], ttl)
  end
  redis.call('EXPIRE', keys[2], ttl)
  redis.call('EXPIRE', keys[3], ttl)
  redis.call('PUBLISH', channel, offset .. ':' .. epoch .. ':' .. published_at .. ':' .. live)
  return offset, epoch
end
"#;

/// `now_ms()`: milliseconds of Redis's own clock, so every task measures time (idleness, expiry,
/// leases) the same way; shared by the stream and approval scripts.
pub(super) const NOW_FUNCTION: &str = r#"
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
"#;

/// A script's answer field as text.
pub(super) fn script_text(value: &redis::Value) -> Option<String> {
    redis::from_redis_value_ref(value).ok()
}

/// KEYS: stream, offset, epoch, bytes. ARGV: frame, HISTORY_SIZE, TTL, a new epoch, channel,
/// published-at (ms), HISTORY_MAX_BYTES.
const PUBLISH_CALL: &str = r#"
local offset, epoch = publish_entry(KEYS, ARGV[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6],
  tonumber(ARGV[7]))
return {offset, epoch}
"#;

/// KEYS: stream, offset, epoch, bytes. ARGV: the offset to read after ('' reads nothing), the
/// most entries, a new epoch, TTL, the most bytes (one entry at least).
const READ_SCRIPT: &str = r#"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[3], epoch, 'EX', ARGV[4])
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
end
local top = tonumber(redis.call('GET', KEYS[2]) or '0')
local entries = {}
if ARGV[1] ~= '' then
  local limit, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[5])
  local bytes, cursor, full = 0, '(' .. ARGV[1] .. '-0', false
  while not full and #entries < limit do
    local batch = redis.call('XRANGE', KEYS[1], cursor, '+', 'COUNT', math.min(limit - #entries, 16))
    if #batch == 0 then break end
    for _, entry in ipairs(batch) do
      bytes = bytes + #entry[2][2]
      if #entries > 0 and bytes > max_bytes then
        full = true
        break
      end
      entries[#entries + 1] = entry
    end
    cursor = '(' .. batch[#batch][1]
  end
end
return {epoch, top, entries}
"#;

/// A publication as it travels on a project's channel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ChannelMessage<'a> {
    pub position: StreamPosition,
    pub published_at_ms: i64,
    pub frame: &'a str,
}

impl<'a> ChannelMessage<'a> {
    pub(crate) fn parse(payload: &'a str) -> Option<Self> {
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
pub(crate) struct RedisEngine {
    connection: CommandConnection,
    seeds: Seeds,
    publish_script: Arc<Script>,
    read_script: Arc<Script>,
    stream_scripts: Arc<streams::StreamScripts>,
    approval_scripts: Arc<approvals::ApprovalScripts>,
    stream_limits: StreamLimits,
    settings: HistorySettings,
    health: RedisHealth,
    metrics: Arc<Metrics>,
    presence: Arc<PresenceStore>,
    /// The projects this task follows, for the subscriber.
    subscriptions: Arc<Subscriptions>,
    /// Where publications and join and leave events go; set by [`Engine::start`].
    delivery: Arc<OnceLock<Arc<dyn LocalDelivery>>>,
    /// Cancelled by [`Engine::close`]: the subscriber and the presence writer stop.
    shutdown: CancellationToken,
    /// The subscriber and the presence writer, for [`Engine::close`] to wait on (taken by the
    /// first call).
    loops: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

fn keys(project_id: &str) -> [String; 4] {
    [
        format!("agenticai:{{{project_id}}}:stream"),
        format!("agenticai:{{{project_id}}}:offset"),
        format!("agenticai:{{{project_id}}}:epoch"),
        format!("agenticai:{{{project_id}}}:bytes"),
    ]
}

/// The channel a project's publications travel on.
pub(crate) fn channel(project_id: &str) -> String {
    format!("agenticai:{{{project_id}}}:pub")
}

/// The project a channel belongs to.
pub(crate) fn project_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("agenticai:{")?.strip_suffix("}:pub")
}

impl RedisEngine {
    /// Connects to one node, or with `cluster` to the cluster these seed nodes belong to (the
    /// connection reconnects by itself afterwards). `presence_ttl`: how long a member outlives
    /// its task's last refresh.
    pub(crate) async fn connect(
        urls: &[&str],
        cluster: bool,
        settings: HistorySettings,
        presence_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        // A URL may hold a password: only its redacted form reaches a message.
        let shown = urls.iter().map(|url| crate::config::redact_url(url)).collect::<Vec<_>>().join(",");
        let refused = |error: redis::RedisError| anyhow::anyhow!("REDIS_URL: {shown}: {error}");
        let connecting = async {
            if cluster {
                let nodes = urls.iter().map(|url| url.into_connection_info()).collect::<RedisResult<Vec<_>>>()?;
                let client = cluster::cluster_client(nodes.clone()).build()?;
                Ok((CommandConnection::Cluster(client.get_async_connection().await?), Seeds::Cluster(nodes)))
            } else {
                let client = redis::Client::open(urls.first().copied().unwrap_or_default())?;
                Ok((CommandConnection::Node(client.get_connection_manager().await?), Seeds::Node(Box::new(client))))
            }
        };
        let (connection, seeds) = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| anyhow::anyhow!("REDIS_URL: no answer from {shown} within 10 s"))?
            .map_err(refused)?;
        let channels = seeds.channels();
        Ok(RedisEngine {
            connection,
            seeds,
            publish_script: Arc::new(channels.script(&format!("{PUBLISH_FUNCTION}{PUBLISH_CALL}"))),
            stream_scripts: Arc::new(streams::StreamScripts::new(channels)),
            approval_scripts: Arc::new(approvals::ApprovalScripts::new(channels)),
            stream_limits: StreamLimits::default(),
            read_script: Arc::new(Script::new(READ_SCRIPT)),
            settings,
            health: RedisHealth::default(),
            metrics,
            presence: Arc::new(PresenceStore::new(presence_ttl, channels)),
            subscriptions: Arc::new(Subscriptions::default()),
            delivery: Arc::default(),
            shutdown: CancellationToken::new(),
            loops: Arc::default(),
        })
    }

    /// The same engine with these bounds on agent streams.
    pub(crate) fn with_stream_limits(mut self, limits: StreamLimits) -> Self {
        self.stream_limits = limits;
        self
    }

    /// Where the subscriber connects.
    pub(crate) fn seeds(&self) -> &Seeds {
        &self.seeds
    }

    /// Appends to the project's history and publishes to every task; the publication's position.
    async fn append_and_publish(&self, project_id: &str, frame: &str) -> RedisResult<StreamPosition> {
        let [stream, offset, epoch, bytes] = keys(project_id);
        let mut connection = self.connection.clone();
        let (offset, epoch): (u64, String) = self
            .publish_script
            .key(stream)
            .key(offset)
            .key(epoch)
            .key(bytes)
            .arg(frame)
            .arg(self.settings.size)
            .arg(self.settings.ttl.as_secs().max(1))
            .arg(new_epoch())
            .arg(channel(project_id))
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(self.settings.max_bytes)
            .invoke_async(&mut connection)
            .await?;
        Ok(StreamPosition { offset, epoch })
    }

    /// The project's position and a page of the publications after `after` (none when `after`
    /// is None), oldest first, with positions: at most `limit` of them and `max_bytes` of
    /// frames, at least one.
    async fn read(
        &self,
        project_id: &str,
        after: Option<u64>,
        limit: usize,
        max_bytes: usize,
    ) -> RedisResult<(StreamPosition, Vec<(u64, ByteString)>)> {
        let [stream, offset, epoch, bytes] = keys(project_id);
        let mut connection = self.connection.clone();
        let (epoch, top, entries): (String, u64, Vec<StreamEntry>) = self
            .read_script
            .key(stream)
            .key(offset)
            .key(epoch)
            .key(bytes)
            .arg(after.map(|offset| offset.to_string()).unwrap_or_default())
            .arg(limit.min(self.settings.size).max(1))
            .arg(new_epoch())
            .arg(self.settings.ttl.as_secs().max(1))
            .arg(max_bytes)
            .invoke_async(&mut connection)
            .await?;
        let top = StreamPosition { offset: top, epoch };
        let entries = entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let offset: u64 = id.split('-').next()?.parse().ok()?;
                let (_, frame) = fields.into_iter().find(|(name, _)| name == "f")?;
                let position = StreamPosition { offset, epoch: top.epoch.clone() };
                Some((offset, position.spliced_into(&frame)))
            })
            .collect();
        Ok((top, entries))
    }

    /// What a client resuming from `since` missed, its first page (no replay without `since`).
    async fn recover_from(
        &self,
        project_id: &str,
        since: Option<&StreamPosition>,
        max_bytes: usize,
    ) -> RedisResult<Recovery> {
        let (top, entries) = self.read(project_id, since.map(|since| since.offset), usize::MAX, max_bytes).await?;
        Ok(recover(since, top, entries))
    }

    /// A page of the publications after `after`, with the project's position.
    pub(crate) async fn page_after(
        &self,
        project_id: &str,
        after: u64,
        max_bytes: usize,
    ) -> RedisResult<(StreamPosition, Vec<(u64, ByteString)>)> {
        self.read(project_id, Some(after), usize::MAX, max_bytes).await
    }
}

fn unavailable(error: redis::RedisError) -> EngineError {
    EngineError::Unavailable(format!("Redis: {error}"))
}

impl Engine for RedisEngine {
    fn describe(&self) -> &'static str {
        match self.seeds {
            Seeds::Node(_) => "redis",
            Seeds::Cluster(_) => "redis_cluster",
        }
    }

    fn start(&self, delivery: Arc<dyn LocalDelivery>) {
        if self.delivery.set(delivery.clone()).is_err() {
            return;
        }
        // Started on the caller's thread, the hub's: the subscriber waits on the hub for each
        // delivery, so the two sharing a thread costs no cross-thread wake-up.
        let mut loops = self.loops.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = self.presence.writer(self.connection.clone(), self.shutdown.clone()) {
            loops.push(actix::spawn(writer));
        }
        if let Some(subscriber) = self.subscriptions.subscriber(self.clone(), delivery, self.shutdown.clone()) {
            loops.push(actix::spawn(subscriber));
        }
    }

    fn subscribe(&self, project_id: &ProjectId) -> BoxFuture<'static, ()> {
        let (subscribed, done) = tokio::sync::oneshot::channel();
        self.subscriptions.send(Interest::Gained(project_id.clone(), subscribed));
        // An error: the subscriber stopped (closed), and nothing will be subscribed.
        async move {
            let _ = done.await;
        }
        .boxed()
    }

    fn unsubscribe(&self, project_id: &ProjectId) {
        self.subscriptions.send(Interest::Lost(project_id.clone()));
    }

    fn publish(&self, project_id: &ProjectId, frame: ByteString) -> BoxFuture<'static, Published> {
        let (engine, project_id) = (self.clone(), project_id.clone());
        async move {
            let delivery = engine.delivery.get();
            match engine.append_and_publish(&project_id, &frame).await {
                Ok(position) => Published {
                    position: Some(position),
                    // Delivered here by the subscriber, like on every other task: counted now.
                    subscribers: delivery.map_or(0, |delivery| delivery.subscriber_count(&project_id)),
                    unavailable: None,
                },
                Err(error) => {
                    let subscribers = match delivery {
                        Some(delivery) => delivery.publication(&project_id, None, frame).await,
                        None => 0,
                    };
                    Published {
                        position: None,
                        subscribers,
                        unavailable: Some(format!("Redis is unavailable ({error})")),
                    }
                }
            }
        }
        .boxed()
    }

    fn recover(
        &self,
        project_id: &ProjectId,
        since: Option<&StreamPosition>,
        max_bytes: usize,
    ) -> EngineFuture<Recovery> {
        let (engine, project_id, since) = (self.clone(), project_id.clone(), since.cloned());
        async move { engine.recover_from(&project_id, since.as_ref(), max_bytes).await.map_err(unavailable) }.boxed()
    }

    fn history(
        &self,
        project_id: &ProjectId,
        since_offset: u64,
        limit: usize,
        max_bytes: usize,
    ) -> EngineFuture<(StreamPosition, Entries)> {
        let (engine, project_id) = (self.clone(), project_id.clone());
        async move { engine.read(&project_id, Some(since_offset), limit, max_bytes).await.map_err(unavailable) }.boxed()
    }

    fn stream_start(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        meta: &StreamMeta,
        frame: ByteString,
    ) -> EngineFuture<StartOutcome> {
        let (engine, project_id, stream_id, meta) = (self.clone(), project_id.clone(), stream_id.clone(), meta.clone());
        async move { engine.start_stream(&project_id, &stream_id, &meta, &frame).await.map_err(unavailable) }.boxed()
    }

    fn stream_append(&self, project_id: &ProjectId, append: Append) -> EngineFuture<AppendOutcome> {
        let (engine, project_id) = (self.clone(), project_id.clone());
        async move { engine.append_to_stream(&project_id, &append).await.map_err(unavailable) }.boxed()
    }

    fn stream_end(&self, project_id: &ProjectId, end: End) -> EngineFuture<EndOutcome> {
        let (engine, project_id) = (self.clone(), project_id.clone());
        async move { engine.end_stream(&project_id, &end).await.map_err(unavailable) }.boxed()
    }

    fn approval_request(
        &self,
        project_id: &ProjectId,
        ask: &ApprovalAsk,
        frame: ByteString,
    ) -> EngineFuture<AskOutcome> {
        let (engine, project_id, ask) = (self.clone(), project_id.clone(), ask.clone());
        async move { engine.request_approval(&project_id, &ask, &frame).await.map_err(unavailable) }.boxed()
    }

    fn approval_decide(
        &self,
        project_id: &ProjectId,
        approval_id: &str,
        decision: &Decision,
        frame: ByteString,
        lease: Duration,
    ) -> EngineFuture<DecideOutcome> {
        let (engine, project_id, approval_id, decision) =
            (self.clone(), project_id.clone(), approval_id.to_owned(), decision.clone());
        async move {
            engine.decide_approval(&project_id, &approval_id, &decision, &frame, lease).await.map_err(unavailable)
        }
        .boxed()
    }

    fn approval_delivered(&self, project_id: &ProjectId, approval_id: &str) -> EngineFuture<()> {
        let (engine, project_id, approval_id) = (self.clone(), project_id.clone(), approval_id.to_owned());
        async move { engine.approval_was_delivered(&project_id, &approval_id).await.map_err(unavailable) }.boxed()
    }

    fn pending_approvals(&self, project_id: &ProjectId) -> EngineFuture<Vec<ApprovalAsk>> {
        let (engine, project_id) = (self.clone(), project_id.clone());
        async move { engine.read_pending_approvals(&project_id).await.map_err(unavailable) }.boxed()
    }

    fn due_approvals(&self) -> EngineFuture<Vec<(ProjectId, String)>> {
        let engine = self.clone();
        async move { engine.read_due_approvals().await.map_err(unavailable) }.boxed()
    }

    fn claim_undelivered(&self, lease: Duration) -> EngineFuture<Vec<Undelivered>> {
        let engine = self.clone();
        async move { engine.claim_undelivered_decisions(lease).await.map_err(unavailable) }.boxed()
    }

    fn stream_cancel(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        message_id: &str,
    ) -> EngineFuture<CancelOutcome> {
        let (engine, project_id, stream_id, message_id) =
            (self.clone(), project_id.clone(), stream_id.clone(), message_id.to_owned());
        async move { engine.cancel_stream(&project_id, &stream_id, &message_id).await.map_err(unavailable) }.boxed()
    }

    fn open_streams(&self, project_id: &ProjectId) -> EngineFuture<Vec<StreamSnapshot>> {
        let (engine, project_id) = (self.clone(), project_id.clone());
        async move { engine.read_open_streams(&project_id).await.map_err(unavailable) }.boxed()
    }

    fn stream_snapshot(&self, project_id: &ProjectId, stream_id: &StreamId) -> EngineFuture<Option<StreamSnapshot>> {
        let (engine, project_id, stream_id) = (self.clone(), project_id.clone(), stream_id.clone());
        async move { engine.read_stream(&project_id, &stream_id).await.map_err(unavailable) }.boxed()
    }

    fn health(&self) -> Health {
        self.health.get()
    }

    fn presence_join(&self, project_id: &ProjectId, member: &Arc<Member>) {
        self.presence.send(Command::Join(project_id.clone(), member.clone()));
    }

    fn presence_leave(&self, project_id: &ProjectId, member: &Arc<Member>) {
        self.presence.send(Command::Leave(project_id.clone(), member.clone()));
    }

    fn presence(&self, project_id: &ProjectId, list: bool) -> EngineFuture<Presence> {
        let (engine, project_id) = (self.clone(), project_id.clone());
        async move { engine.presence.read(&engine.connection, &project_id, list).await.map_err(unavailable) }.boxed()
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        self.shutdown.cancel();
        // A second call finds nothing left to wait on: the first one waits.
        let loops = std::mem::take(&mut *self.loops.lock().unwrap_or_else(PoisonError::into_inner));
        async move {
            for ended in loops {
                // A loop that panicked has ended too.
                let _ = ended.await;
            }
        }
        .boxed()
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
