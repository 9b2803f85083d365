//! The engine: the one interface to whatever keeps the projects' streams and carries them
//! between tasks, with two implementations behind it: [`memory::MemoryEngine`] (one task, no
//! REDIS_URL) and [`redis::RedisEngine`] (any number of tasks sharing one Redis). Centrifuge
//! splits the same duties into its `Broker` and `PresenceManager` interfaces; the hub never asks
//! which engine runs.
//!
//! What goes through the engine: a publication's position and its place in the history
//! ([`Engine::publish`], [`Engine::stamp`]), resume reads ([`Engine::recover`]), history pages
//! ([`Engine::history`]), cross-task delivery (the Redis engine's subscriber actor, which
//! [`Engine::attach`] starts) and presence ([`Engine::presence_join`], [`Engine::presence`]; see
//! [`presence`]). What stays in [`crate::hub`]: the registry of this task's connections and the
//! fan-out of a publication (or a join/leave event) to them.
//!
//! # Contracts (both implementations keep them)
//!
//! - **Ordering per project.** Offsets of a project grow by one per publication within an epoch,
//!   and every task's hub receives a project's publications in offset order. The memory engine
//!   stamps on the hub's thread as the hub fans out ([`Engine::stamp`]), so its mailbox order is
//!   the offset order; the Redis engine stamps in one Lua script and delivers through one pub/sub
//!   connection per task, whose order is the order of the scripts. Nothing is ordered across
//!   projects.
//! - **Atomicity.** Taking the next offset, appending to the history and handing the publication
//!   to the fan-out are one step: no reader sees an offset without its publication, and no
//!   subscriber gets a publication the history does not hold (while the back end is up).
//!   A resume read returns the top position and the entries after `since` from one snapshot.
//! - **Bounded by bytes.** Each project's history keeps at most HISTORY_SIZE publications and
//!   HISTORY_MAX_BYTES of them (the newest always); the memory engine also keeps at most
//!   HISTORY_MAX_TOTAL_BYTES across projects. A read returns one page, at most the bytes asked
//!   for: nothing reads a whole history into memory at once.
//! - **While the back end is down** (Redis only; memory has none to lose): a publication is
//!   still delivered to this task's subscribers, without a position and without history, and its
//!   publisher is told so ([`Route::Local`] with `unavailable`); resume reads and history pages
//!   fail with [`EngineError::Unavailable`]; subscribes are confirmed at once without a position
//!   ([`Engine::is_down`]). When the back end returns, the subscriber fills each project's gap
//!   from the history and the hub drops what it delivered already.
//! - **Presence.** Each task reports its own members (a connection's subscription to a project)
//!   in order: [`Engine::presence_join`] and [`Engine::presence_leave`], called by the hub once
//!   per subscription added and removed. A read ([`Engine::presence`]) sees every task's
//!   members: at once in memory; with Redis, once the task's presence writer wrote them (about
//!   one round trip). A task that dies without a word: its members are gone within
//!   PRESENCE_TTL_SECS (Redis entries expire unless their task refreshes them every TTL / 3); a
//!   Redis that lost its data: every task puts its members back at its next refresh. While Redis
//!   is down, reads fail with [`EngineError::Unavailable`] and changes are written when it is
//!   back.
//! - **Join and leave events: at most once.** The engine announces a member it did not hold
//!   (`join`) and the removal of one it held (`leave`) to the project's subscribers on every task
//!   ([`crate::hub::PresenceEvent`]), in order with the project's publications. Members that
//!   expire (their task died) and changes made while the back end is down are not announced; a
//!   client reconciles by asking `presence` after it (re)subscribes.

pub(crate) mod memory;
pub(crate) mod positions;
pub(crate) mod presence;
pub(crate) mod redis;

use std::sync::Arc;

use actix::{Addr, Recipient};
use bytestring::ByteString;
use futures_util::future::BoxFuture;

use crate::{
    hub::{Hub, ProjectInterest},
    protocol::{request::ProjectId, StreamPosition},
};
use positions::{Entries, Recovery};
use presence::{Member, Presence};

/// The back end did not answer or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error("{0}")]
    Unavailable(String),
}

/// An engine's answer, later.
pub(crate) type EngineFuture<T> = BoxFuture<'static, Result<T, EngineError>>;

/// How a publication reaches this task's subscribers after [`Engine::publish`].
#[derive(Debug)]
pub(crate) enum Route {
    /// Stamped, kept, and on its way to every task's hub (this one included) through the back
    /// end.
    Broadcast(StreamPosition),
    /// To be handed to this task's hub, which gives it its position with [`Engine::stamp`] as
    /// it fans it out. `unavailable` says why it reaches no other task and is not kept (the back
    /// end is down); `None` when this task is all there is.
    Local { unavailable: Option<String> },
}

/// The engine's interface; see the module documentation for the contracts.
pub(crate) trait Engine: Send + Sync + 'static {
    /// `memory` or `redis`, for logs.
    fn describe(&self) -> &'static str;

    /// Called once by the hub as it starts, on the hub's thread. Returns who follows the set
    /// of projects with local subscribers (the Redis subscriber, which subscribes their
    /// channels), if anyone must.
    fn attach(&self, hub: Addr<Hub>) -> Option<Recipient<ProjectInterest>>;

    /// Starts a publication on its way; the frame is the encoded publication without position.
    fn publish(&self, project_id: &ProjectId, frame: &ByteString) -> BoxFuture<'static, Route>;

    /// Called by the hub, on its thread, for a publication routed [`Route::Local`]: its
    /// position (none without a history to keep it) and the frame with the position spliced in.
    fn stamp(&self, project_id: &ProjectId, frame: ByteString) -> (Option<StreamPosition>, ByteString);

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

    /// Whether the back end is reachable (for `/ready`); `None` when there is none to reach.
    fn backend_up(&self) -> Option<bool>;

    /// Whether the back end was up and is lost (not merely still connecting at start-up): then
    /// a subscribe does not wait on it.
    fn is_down(&self) -> bool;

    /// A connection of this task subscribed to the project. Called by the hub, on its thread,
    /// once per subscription; never waits.
    fn presence_join(&self, project_id: &ProjectId, member: &Arc<Member>);

    /// The subscription [`Engine::presence_join`] reported ended (unsubscribe, close).
    fn presence_leave(&self, project_id: &ProjectId, member: &Arc<Member>);

    /// The project's members on every task: the counts, and with `list` up to
    /// [`presence::PRESENCE_LIST_LIMIT`] of them.
    fn presence(&self, project_id: &ProjectId, list: bool) -> EngineFuture<Presence>;
}
