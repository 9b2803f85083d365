//! The engine: the one interface to whatever keeps the projects' streams and carries them
//! between tasks, with two implementations behind it: [`memory::MemoryEngine`] (one task, no
//! REDIS_URL) and [`redis::RedisEngine`] (any number of tasks sharing one Redis, or a Redis Cluster
//! with REDIS_CLUSTER). Centrifuge
//! splits the same duties into its `Broker` and `PresenceManager` interfaces; the hub never asks
//! which engine runs.
//!
//! The engine sits below the hub and never names it. Like Centrifuge's broker, which knows a
//! `BrokerEventHandler` and not the node, it delivers through [`LocalDelivery`], the small
//! interface this task's hub implements and hands over once ([`Engine::start`]); and it learns
//! which projects this task follows from the hub's [`Engine::subscribe`] and
//! [`Engine::unsubscribe`] (with Redis, the subscriber subscribes their channels).
//!
//! What goes through the engine: a publication's position, its place in the history and its
//! delivery to every task ([`Engine::publish`], one path for both engines: the memory engine
//! appends under its history's lock and hands the publication to [`LocalDelivery`] there; the
//! Redis engine's subscriber hands over what arrives on the project's channel), resume reads
//! ([`Engine::recover`]), history pages ([`Engine::history`]), presence
//! ([`Engine::presence_join`], [`Engine::presence`]; see [`presence`]), the back end's health
//! ([`Engine::health`]) and the end of its own loops ([`Engine::close`]). What stays in
//! [`crate::hub`]: the registry of this task's connections and the fan-out to them.
//!
//! # Contracts (both implementations keep them; `tests/engine_contract.rs` checks them on both)
//!
//! - **Ordering per project.** Offsets of a project grow by one per publication within an epoch,
//!   and every task's [`LocalDelivery`] receives a project's publications in offset order, each
//!   once. The memory engine takes the offset and hands the publication over under one lock; the
//!   Redis engine stamps in one Lua script and delivers through one pub/sub connection per task,
//!   whose order is the order of the scripts, dropping what it delivered already (after a
//!   reconnect, the gap is read from the history first). Nothing is ordered across projects.
//! - **Atomicity.** Taking the next offset, appending to the history and handing the publication
//!   to the fan-out are one step: no reader sees an offset without its publication, and no
//!   subscriber gets a publication the history does not hold (while the back end is up).
//!   A resume read returns the top position and the entries after `since` from one snapshot.
//! - **Bounded by bytes.** Each project's history keeps at most HISTORY_SIZE publications and
//!   HISTORY_MAX_BYTES of them (the newest always); the memory engine also keeps at most
//!   HISTORY_MAX_TOTAL_BYTES across projects. A read returns one page, at most the bytes asked
//!   for: nothing reads a whole history into memory at once.
//! - **While the back end is down** (Redis only; memory has none to lose, [`Health::InProcess`]):
//!   a publication is still delivered to this task's subscribers, without a position and without
//!   history, and its publisher is told so ([`Published::unavailable`]); resume reads and history
//!   pages fail with [`EngineError::Unavailable`]; subscribes are confirmed at once without a
//!   position ([`Health::Lost`]). When the back end returns, the subscriber fills each project's
//!   gap from the history.
//! - **Presence.** Each task reports its own members (a connection's subscription to a project)
//!   in order: [`Engine::presence_join`] and [`Engine::presence_leave`], called by the hub once
//!   per subscription added and removed. A read ([`Engine::presence`]) sees every task's
//!   members: at once in memory; with Redis, once the task's presence writer wrote them (about
//!   one round trip). A task that dies without a word: its members are gone within
//!   PRESENCE_TTL_SECS (Redis entries expire unless their task refreshes them every TTL / 3); a
//!   Redis that lost its data: every task puts its members back at its next refresh. While Redis
//!   is down, reads fail with [`EngineError::Unavailable`] and changes are written when it is
//!   back. A task that closes its engine ([`Engine::close`]) removes its members at once.
//! - **Join and leave events: at most once.** The engine announces a member it did not hold
//!   (`join`) and the removal of one it held (`leave`) to the project's subscribers on every task
//!   ([`LocalDelivery::presence_change`]), in order with the project's publications. Members that
//!   expire (their task died) and changes made while the back end is down are not announced; a
//!   client reconciles by asking `presence` after it (re)subscribes.
//! - **Agent streams** ([`streams`]). A stream's text and state live in the engine: appends to
//!   one stream apply in one order whichever task accepted them ([`Engine::stream_append`]), and
//!   every task's [`LocalDelivery::stream_append`] receives them in that order, in order with
//!   the project's publications (a stream's start and end are publications). An append is
//!   delivered once per task while the back end is up; one missed across a Redis reconnect
//!   shows as a gap in the lengths, and the hub then reads the stream again
//!   ([`Engine::open_streams`]). Refusals (ended, conflict, bounds) apply nothing.

pub(crate) mod approvals;
pub(crate) mod memory;
pub(crate) mod positions;
pub(crate) mod presence;
pub(crate) mod redis;
pub(crate) mod streams;

use std::{sync::Arc, time::Duration};

use bytestring::ByteString;
use futures_util::future::BoxFuture;

use crate::{
    connection::ConnectionId,
    protocol::{
        approvals::{ApprovalAsk, Decision},
        request::ProjectId,
        streams::{StreamId, StreamMeta},
        StreamPosition,
    },
};
use approvals::{AskOutcome, DecideOutcome, Undelivered};
use positions::{Entries, Recovery};
use presence::{Change, Member, Presence};
use streams::{Append, AppendOutcome, CancelOutcome, End, EndOutcome, StartOutcome, StreamSnapshot};

/// The back end did not answer or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error("{0}")]
    Unavailable(String),
}

/// An engine's answer, later.
pub(crate) type EngineFuture<T> = BoxFuture<'static, Result<T, EngineError>>;

/// Where an engine hands over what this task's subscribers get: implemented by the hub, given
/// to the engine once by [`Engine::start`]. Centrifuge's `BrokerEventHandler`.
pub(crate) trait LocalDelivery: Send + Sync + 'static {
    /// A publication of the project, with its position (None: the back end did not take it,
    /// so it has none). Called in the project's offset order, each publication once; it is queued
    /// for the fan-out before this returns, so the order of the calls is the order subscribers
    /// see. Resolves, once it was fanned out, to how many subscribers it was queued to. A caller
    /// that waits for that before its next call has at most one publication on its way.
    fn publication(
        &self,
        project_id: &ProjectId,
        position: Option<StreamPosition>,
        frame: ByteString,
    ) -> BoxFuture<'static, usize>;

    /// A member's join or leave (`frame`: the event, encoded once), for the project's
    /// subscribers that asked for them, except the member's own connection. Queued before this
    /// returns, like a publication; resolves once handed over.
    fn presence_change(
        &self,
        project_id: &ProjectId,
        change: Change,
        connection_id: ConnectionId,
        frame: ByteString,
    ) -> BoxFuture<'static, ()>;

    /// This task's subscribers of the project now, without waiting: what the receipt of a
    /// publication delivered through the back end counts.
    fn subscriber_count(&self, project_id: &ProjectId) -> usize;

    /// `text` was appended to a stream of the project, making it `length` bytes long. Called in
    /// the order the appends applied, in order with the project's publications; queued before
    /// this returns, resolves at once or, when the receiver is behind, once handed over.
    fn stream_append(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        text: ByteString,
        length: u64,
    ) -> BoxFuture<'static, ()>;
}

/// What [`Engine::publish`] did.
#[derive(Debug)]
pub(crate) struct Published {
    /// The publication's place in the project's stream; None when the back end did not take
    /// it.
    pub position: Option<StreamPosition>,
    /// This task's subscribers it was queued to (delivered through the back end: this task's
    /// subscribers of the project when it was published).
    pub subscribers: usize,
    /// Why it reached this task's subscribers only and is not kept: the back end is down.
    pub unavailable: Option<String>,
}

/// The state of the engine's back end, the one question `/ready`, the status page and a
/// subscribe ask about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// There is no back end to lose: everything is in this process.
    InProcess,
    /// The back end has not answered yet since start-up.
    Connecting,
    Up,
    /// The back end answered and is lost.
    Lost,
}

impl Health {
    /// The back end as `/ready` and the status page show it: None when there is none, else
    /// whether it is up.
    pub(crate) fn backend_up(self) -> Option<bool> {
        match self {
            Health::InProcess => None,
            Health::Up => Some(true),
            Health::Connecting | Health::Lost => Some(false),
        }
    }

    /// Whether a subscribe goes on without waiting for the back end: it was up and is lost (a
    /// back end still connecting at start-up is waited for).
    pub(crate) fn is_lost(self) -> bool {
        self == Health::Lost
    }
}

/// The engine's interface; see the module documentation for the contracts.
pub(crate) trait Engine: Send + Sync + 'static {
    /// `memory`, `redis` or `redis_cluster`, for logs and the `engine_info` metric.
    fn describe(&self) -> &'static str;

    /// Hands the engine where to deliver and starts its own loops (Redis: the subscriber and
    /// the presence writer), on the caller's thread. Called once, by the hub as it starts; a
    /// second call changes nothing.
    fn start(&self, delivery: Arc<dyn LocalDelivery>);

    /// This task has its first subscriber of the project: deliver its publications from now on.
    /// Resolves once every publication taken after this point will be delivered (Redis: the
    /// project's channel is subscribed), so a history read that follows cannot miss one; at
    /// once when there is nothing to wait for.
    fn subscribe(&self, project_id: &ProjectId) -> BoxFuture<'static, ()>;

    /// This task lost its last subscriber of the project.
    fn unsubscribe(&self, project_id: &ProjectId);

    /// Positions, keeps and delivers a publication (the encoded frame, without position) to the
    /// project's subscribers on every task, this task's through [`LocalDelivery`]. With the
    /// memory engine the publication is positioned and queued for delivery when this is called,
    /// so calls are delivered in the order they were made.
    fn publish(&self, project_id: &ProjectId, frame: ByteString) -> BoxFuture<'static, Published>;

    /// What a client resuming from `since` missed, and the project's position: the first
    /// page of it, at most `max_bytes` of frames (at least one publication); the replay reads
    /// the rest with [`Engine::history`].
    fn recover(
        &self,
        project_id: &ProjectId,
        since: Option<&StreamPosition>,
        max_bytes: usize,
    ) -> EngineFuture<Recovery>;

    /// The project's position and a page of the retained publications after `since_offset`,
    /// oldest first: at most `limit` of them and `max_bytes` of frames (at least one
    /// publication, when any follows `since_offset`), read in one snapshot with the position.
    fn history(
        &self,
        project_id: &ProjectId,
        since_offset: u64,
        limit: usize,
        max_bytes: usize,
    ) -> EngineFuture<(StreamPosition, Entries)>;

    /// Opens a stream: its start (`frame`, `{"type":"stream_started",...}` without position)
    /// becomes a publication of the project, delivered like [`Engine::publish`]'s.
    fn stream_start(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        meta: &StreamMeta,
        frame: ByteString,
    ) -> EngineFuture<StartOutcome>;

    /// Appends to an open stream and hands the text to every task's
    /// [`LocalDelivery::stream_append`]; resolves once this task's was queued (see there).
    fn stream_append(&self, project_id: &ProjectId, append: Append) -> EngineFuture<AppendOutcome>;

    /// Ends an open stream: its end becomes a publication of the project (delivered as
    /// `stream_ended`, kept in the history as a `stream_snapshot` with the final text).
    fn stream_end(&self, project_id: &ProjectId, end: End) -> EngineFuture<EndOutcome>;

    /// Records the first cancel of an open stream, as `message_id` (the one its agent is sent):
    /// one per stream, however many ask, across tasks.
    fn stream_cancel(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        message_id: &str,
    ) -> EngineFuture<CancelOutcome>;

    /// The project's open streams, whole.
    fn open_streams(&self, project_id: &ProjectId) -> EngineFuture<Vec<StreamSnapshot>>;

    /// One stream, open or ended (while the engine keeps it).
    fn stream_snapshot(&self, project_id: &ProjectId, stream_id: &StreamId) -> EngineFuture<Option<StreamSnapshot>>;

    /// Keeps a question pending (durable in the back end) and publishes its `frame`
    /// (`approval_requested`); the publication's position. A question whose id exists is asked
    /// already: nothing is done, and the answer is that question.
    fn approval_request(
        &self,
        project_id: &ProjectId,
        ask: &ApprovalAsk,
        frame: ByteString,
    ) -> EngineFuture<AskOutcome>;

    /// Records `decision` if it is the first (atomically, across tasks) and publishes its `frame`
    /// (`approval_resolved`); the decision's delivery is tracked until
    /// [`Engine::approval_delivered`]: another task may re-send it once `lease` is over.
    /// `"expired"` decides only a question whose time has come.
    fn approval_decide(
        &self,
        project_id: &ProjectId,
        approval_id: &str,
        decision: &Decision,
        frame: ByteString,
        lease: Duration,
    ) -> EngineFuture<DecideOutcome>;

    /// A queue confirmed the decision's message: nobody re-sends it.
    fn approval_delivered(&self, project_id: &ProjectId, approval_id: &str) -> EngineFuture<()>;

    /// The project's pending questions.
    fn pending_approvals(&self, project_id: &ProjectId) -> EngineFuture<Vec<ApprovalAsk>>;

    /// Questions whose time has come, across projects (to be decided `expired`).
    fn due_approvals(&self) -> EngineFuture<Vec<(ProjectId, String)>>;

    /// Decisions no queue confirmed within their lease (their task died, or the queue was
    /// down), claimed by this task for another lease: it re-sends them.
    fn claim_undelivered(&self, lease: Duration) -> EngineFuture<Vec<Undelivered>>;

    /// The back end's state.
    fn health(&self) -> Health;

    /// A connection of this task subscribed to the project. Called by the hub, on its thread,
    /// once per subscription; never waits.
    fn presence_join(&self, project_id: &ProjectId, member: &Arc<Member>);

    /// The subscription [`Engine::presence_join`] reported ended (unsubscribe, close).
    fn presence_leave(&self, project_id: &ProjectId, member: &Arc<Member>);

    /// The project's members on every task: the counts, and with `list` up to
    /// [`presence::PRESENCE_LIST_LIMIT`] of them.
    fn presence(&self, project_id: &ProjectId, list: bool) -> EngineFuture<Presence>;

    /// Stops the engine's own loops, for the drain once the connections are closed: this task's
    /// members leave presence (with Redis, written within a bound and announced to the other
    /// tasks), and the subscriber stops. Safe to call twice; resolves once the loops ended.
    fn close(&self) -> BoxFuture<'static, ()>;
}
