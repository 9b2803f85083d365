//! Presence in Redis, Centrifuge's layout: per project P (all keys hash-tagged `{P}`, so one
//! Redis Cluster slot holds them):
//!
//! - `agenticai:{P}:presence`: hash, connection id -> member JSON;
//! - `agenticai:{P}:presence_expiry`: sorted set, connection id -> expiry (ms, Redis's clock);
//! - `agenticai:{P}:presence_users`: hash, user id -> that user's connections;
//! - `agenticai:{P}:presence_users_expiry`: sorted set, user id -> expiry.
//!
//! The scripts use `ZADD ... GT` and `TIME` in scripts that write: Redis 6.2 or later (or any
//! Valkey).
//!
//! Each task writes its own members only, through one **presence writer** task ([`write`]): joins
//! and leaves in the order the hub reported them, batched into one pipeline of scripts, and
//! every PRESENCE_TTL_SECS / 3 a refresh that re-adds every local member with a fresh expiry.
//! So a task killed without a word stops refreshing and its members expire within
//! PRESENCE_TTL_SECS; a Redis that lost its data gets every member back at the next refresh.
//! Expired members are removed lazily, by the read script, before it counts.
//!
//! A join of a member Redis did not hold, and a leave of one it held, are published by the same
//! script on the project's channel (`join:<connection id>:<frame>`, `leave:...`), so every task's subscriber delivers them in
//! order with the project's publications. A refresh re-adds without announcing.
//!
//! **Closing** ([`crate::engine::Engine::close`], after the drain closed the connections): the
//! writer applies the changes still queued, removes every member it still holds (announcing
//! their leaves), within [`CLOSE_WRITE_TIMEOUT`], and ends; what it could not write expires
//! after the TTL.
//!
//! **Channel bound**: the writer's command channel is unbounded: one command per subscription
//! change the hub accepted (bounded by the hub's mailbox), and a lost one would leave a member
//! listed until it expired, or missing until the next refresh.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use redis::Script;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    channel,
    cluster::{Channels, CommandConnection},
};
use crate::{
    engine::presence::{Change, Member, Presence, PRESENCE_LIST_LIMIT},
    protocol::request::ProjectId,
};

/// Commands applied per pipeline, at most.
const BATCH: usize = 512;

/// Longest the writer takes, once closed, to write what is queued and remove this task's
/// members.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Adds or refreshes a member. KEYS: presence, presence_expiry, presence_users,
/// presence_users_expiry. ARGV: ttl ms, connection id, member JSON, user id ('' for none),
/// announce ('1' publishes the join if the member is new), channel, join frame.
const ADD_SCRIPT: &str = r#"
local time = redis.call('TIME')
local expiry = time[1] * 1000 + math.floor(time[2] / 1000) + tonumber(ARGV[1])
local new = redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) == 1
redis.call('ZADD', KEYS[2], expiry, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
if ARGV[4] ~= '' then
  if new then
    redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
  end
  redis.call('ZADD', KEYS[4], 'GT', expiry, ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
  redis.call('PEXPIRE', KEYS[4], ARGV[1])
end
if new and ARGV[5] == '1' then
  redis.call('PUBLISH', ARGV[6], 'join:' .. ARGV[2] .. ':' .. ARGV[7])
end
return new and 1 or 0
"#;

/// Removes a member. KEYS as [`ADD_SCRIPT`]. ARGV: connection id, user id ('' for none),
/// channel, leave frame.
const REMOVE_SCRIPT: &str = r#"
local existed = redis.call('HDEL', KEYS[1], ARGV[1]) == 1
redis.call('ZREM', KEYS[2], ARGV[1])
if existed and ARGV[2] ~= '' then
  if redis.call('HINCRBY', KEYS[3], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[3], ARGV[2])
    redis.call('ZREM', KEYS[4], ARGV[2])
  end
end
if existed then
  redis.call('PUBLISH', ARGV[3], 'leave:' .. ARGV[1] .. ':' .. ARGV[4])
end
return existed and 1 or 0
"#;

/// Drops expired members and users, then counts, and lists up to ARGV[1] members when ARGV[2]
/// is '1' (HSCAN past the limit, so a big project costs a bounded answer). KEYS as
/// [`ADD_SCRIPT`].
const READ_SCRIPT: &str = r#"
local time = redis.call('TIME')
local now = time[1] * 1000 + math.floor(time[2] / 1000)
for pair = 1, 3, 2 do
  local expired = redis.call('ZRANGEBYSCORE', KEYS[pair + 1], '-inf', now)
  for index = 1, #expired do
    redis.call('HDEL', KEYS[pair], expired[index])
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[pair + 1], '-inf', now)
  end
end
local clients = redis.call('HLEN', KEYS[1])
local users = redis.call('HLEN', KEYS[3])
local limit = tonumber(ARGV[1])
local listed = {}
if ARGV[2] == '1' then
  if clients <= limit then
    listed = redis.call('HVALS', KEYS[1])
  else
    local cursor = '0'
    repeat
      local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 100)
      cursor = page[1]
      for index = 2, #page[2], 2 do
        if #listed < limit then
          listed[#listed + 1] = page[2][index]
        end
      end
    until cursor == '0' or #listed >= limit
  end
end
return {clients, users, listed}
"#;

fn keys(project_id: &str) -> [String; 4] {
    [
        format!("agenticai:{{{project_id}}}:presence"),
        format!("agenticai:{{{project_id}}}:presence_expiry"),
        format!("agenticai:{{{project_id}}}:presence_users"),
        format!("agenticai:{{{project_id}}}:presence_users_expiry"),
    ]
}

/// A change of this task's members, for the writer.
pub(crate) enum Command {
    Join(ProjectId, Arc<Member>),
    Leave(ProjectId, Arc<Member>),
}

/// The scripts, and the writer's command channel (its receiver until the writer starts).
pub(crate) struct PresenceStore {
    add: Script,
    remove: Script,
    read: Script,
    ttl: Duration,
    /// Shared by every clone of the engine and by the writer itself, so the channel stays open
    /// as long as the writer runs; the writer ends on the engine's shutdown token instead.
    commands: mpsc::UnboundedSender<Command>,
    /// Taken by [`PresenceStore::writer`] when the engine starts.
    pending: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
}

impl PresenceStore {
    pub(crate) fn new(ttl: Duration, channels: Channels) -> Self {
        let (commands, pending) = mpsc::unbounded_channel();
        PresenceStore {
            add: channels.script(ADD_SCRIPT),
            remove: channels.script(REMOVE_SCRIPT),
            read: Script::new(READ_SCRIPT),
            ttl,
            commands,
            pending: Mutex::new(Some(pending)),
        }
    }

    pub(crate) fn send(&self, command: Command) {
        // Refused only once the writer ended (the engine closed): the member expires after the
        // TTL.
        let _ = self.commands.send(command);
    }

    /// Counts, and with `list` up to [`PRESENCE_LIST_LIMIT`] members.
    pub(crate) async fn read(
        &self,
        connection: &CommandConnection,
        project_id: &str,
        list: bool,
    ) -> redis::RedisResult<Presence> {
        let mut connection = connection.clone();
        let mut invocation = self.read.prepare_invoke();
        for key in keys(project_id) {
            invocation.key(key);
        }
        let (num_clients, num_users, clients): (usize, usize, Vec<String>) =
            invocation.arg(PRESENCE_LIST_LIMIT).arg(if list { "1" } else { "0" }).invoke_async(&mut connection).await?;
        Ok(Presence { num_clients, num_users, clients })
    }

    /// The writer's body, once (None when it runs already); it ends when `shutdown` is
    /// cancelled, after removing this task's members.
    pub(crate) fn writer(
        self: &Arc<Self>,
        connection: CommandConnection,
        shutdown: CancellationToken,
    ) -> Option<impl std::future::Future<Output = ()>> {
        let commands = self.pending.lock().ok()?.take()?;
        Some(write(self.clone(), connection, commands, shutdown))
    }

    fn add_to(&self, pipe: &mut redis::Pipeline, project_id: &str, member: &Member, announce: bool) {
        let ttl_ms = self.ttl.as_millis().to_string();
        let frame = if announce { Change::Join.frame(project_id, member).to_string() } else { String::new() };
        pipe.cmd("EVALSHA")
            .arg(self.add.get_hash())
            .arg(4)
            .arg(&keys(project_id)[..])
            .arg(ttl_ms)
            .arg(&*member.connection_id);
        pipe.arg(&*member.json)
            .arg(member.user_id.as_deref().unwrap_or(""))
            .arg(if announce { "1" } else { "0" })
            .arg(channel(project_id))
            .arg(frame)
            .ignore();
    }

    fn remove_from(&self, pipe: &mut redis::Pipeline, project_id: &str, member: &Member) {
        pipe.cmd("EVALSHA").arg(self.remove.get_hash()).arg(4).arg(&keys(project_id)[..]);
        pipe.arg(&*member.connection_id)
            .arg(member.user_id.as_deref().unwrap_or(""))
            .arg(channel(project_id))
            .arg(Change::Leave.frame(project_id, member).to_string())
            .ignore();
    }

    /// Runs a pipeline of EVALSHAs, loading the scripts first when Redis does not know them (a
    /// first run, or a Redis that restarted).
    async fn run(&self, connection: &mut CommandConnection, pipe: &redis::Pipeline) -> redis::RedisResult<()> {
        match pipe.query_async::<()>(connection).await {
            Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.add.load_async(connection).await?;
                self.remove.load_async(connection).await?;
                pipe.query_async::<()>(connection).await
            }
            result => result,
        }
    }
}

/// The presence writer's state: this task's members as written (or to be written) to Redis.
struct Writer {
    store: Arc<PresenceStore>,
    connection: CommandConnection,
    members: HashMap<ProjectId, HashMap<Arc<str>, Arc<Member>>>,
    /// Leaves Redis did not take: retried at each refresh unless the member came back.
    unsent_leaves: Vec<(ProjectId, Arc<Member>)>,
    /// Whether the last write failed (logged once per outage).
    failing: bool,
}

impl Writer {
    /// Writes a batch of joins and leaves, in order, in one pipeline.
    async fn apply(&mut self, batch: Vec<Command>) {
        let mut pipe = redis::pipe();
        let mut leaves = Vec::new();
        for command in batch {
            match command {
                Command::Join(project_id, member) => {
                    self.store.add_to(&mut pipe, &project_id, &member, true);
                    self.members.entry(project_id).or_default().insert(member.connection_id.clone(), member);
                }
                Command::Leave(project_id, member) => {
                    self.store.remove_from(&mut pipe, &project_id, &member);
                    if let Some(project) = self.members.get_mut(&project_id) {
                        project.remove(&member.connection_id);
                        if project.is_empty() {
                            self.members.remove(&project_id);
                        }
                    }
                    leaves.push((project_id, member));
                }
            }
        }
        if let Err(error) = self.store.run(&mut self.connection, &pipe).await {
            if !self.failing {
                log::warn!(error:% = error; "presence not written to Redis; retried at the next refresh");
            }
            self.failing = true;
            self.unsent_leaves.extend(leaves);
        }
    }

    /// Re-adds every member with a fresh expiry, and retries the leaves Redis did not take.
    async fn refresh(&mut self) {
        let mut pipe = redis::pipe();
        let mut queued = 0;
        let retried = std::mem::take(&mut self.unsent_leaves);
        for (project_id, member) in &retried {
            let back = self.members.get(project_id).is_some_and(|project| project.contains_key(&member.connection_id));
            if !back {
                self.store.remove_from(&mut pipe, project_id, member);
                queued += 1;
            }
        }
        let mut result = Ok(());
        for (project_id, project) in &self.members {
            for member in project.values() {
                self.store.add_to(&mut pipe, project_id, member, false);
                queued += 1;
                if queued >= BATCH {
                    result = result.and(self.store.run(&mut self.connection, &pipe).await);
                    pipe = redis::pipe();
                    queued = 0;
                }
            }
        }
        if queued > 0 {
            result = result.and(self.store.run(&mut self.connection, &pipe).await);
        }
        match result {
            Ok(()) if self.failing => {
                log::info!("presence written to Redis again");
                self.failing = false;
            }
            Ok(()) => {}
            Err(error) => {
                if !self.failing {
                    log::warn!(error:% = error; "presence refresh failed; retried at the next refresh");
                }
                self.failing = true;
                self.unsent_leaves = retried;
            }
        }
    }

    /// The task is closing: writes what is queued, then removes every member still held (and
    /// retries the leaves Redis did not take).
    async fn leave_all(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) {
        let mut queued = Vec::new();
        while let Ok(command) = commands.try_recv() {
            queued.push(command);
        }
        self.apply_in_batches(queued).await;
        let held = self.members.iter().flat_map(|(project_id, project)| {
            project.values().map(|member| Command::Leave(project_id.clone(), member.clone()))
        });
        let unsent =
            self.unsent_leaves.iter().map(|(project_id, member)| Command::Leave(project_id.clone(), member.clone()));
        let leaves = held.chain(unsent).collect();
        self.unsent_leaves.clear();
        self.apply_in_batches(leaves).await;
    }

    async fn apply_in_batches(&mut self, commands: Vec<Command>) {
        let mut commands = commands.into_iter().peekable();
        while commands.peek().is_some() {
            let batch = commands.by_ref().take(BATCH).collect();
            self.apply(batch).await;
        }
    }
}

/// The presence writer: applies the hub's joins and leaves in order, and refreshes every local
/// member every TTL / 3, until `shutdown`; then removes this task's members.
async fn write(
    store: Arc<PresenceStore>,
    connection: CommandConnection,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shutdown: CancellationToken,
) {
    let mut refresh = tokio::time::interval((store.ttl / 3).max(Duration::from_millis(100)));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut writer = Writer { store, connection, members: HashMap::new(), unsent_leaves: Vec::new(), failing: false };
    let writing = async {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    let mut batch = vec![command];
                    while batch.len() < BATCH {
                        match commands.try_recv() {
                            Ok(command) => batch.push(command),
                            Err(_) => break,
                        }
                    }
                    writer.apply(batch).await;
                }
                _ = refresh.tick() => writer.refresh().await,
            }
        }
        writer.leave_all(&mut commands).await;
    };
    // From the stop on, the writer has CLOSE_WRITE_TIMEOUT in all: to finish the write it is in
    // (which waits for Redis as long as Redis is down) and to remove this task's members.
    let closing = async {
        shutdown.cancelled().await;
        tokio::time::sleep(CLOSE_WRITE_TIMEOUT).await;
    };
    tokio::select! {
        () = writing => {}
        () = closing => log::warn!(
            "presence of this task not removed from Redis within {CLOSE_WRITE_TIMEOUT:?}; it expires after the TTL"
        ),
    }
}
