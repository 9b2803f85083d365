//! The hub actor: the registry of this task's connections and their subscriptions, and the
//! fan-out of publications to them. Positions, history and other tasks are the
//! [`Engine`](crate::engine::Engine)'s; the hub never asks which engine runs.
//!
//! It owns two maps kept in step: connection -> projects and project -> (connection -> member).
//! A publication is encoded once before it reaches the hub; the hub pushes the same bytes into
//! each subscriber's [`Outbox`] without waiting on anyone: a full outbox closes that client as
//! a slow consumer and the fan-out goes on.
//!
//! Publications arrive one way, whichever engine runs: the engine hands each over through
//! [`LocalDelivery`], which the hub implements ([`HubDelivery`], given to the engine once as the
//! hub starts), in the project's offset order, each once; the hub fans it out. The hub tells the
//! engine which projects it follows ([`Engine::subscribe`] for a project's first local
//! subscriber, [`Engine::unsubscribe`] for its last) and keeps a count of each project's
//! subscribers that the engine reads without a message ([`SubscriberCounts`]).
//!
//! Agent streams ([`streams`]): the hub keeps a copy of each open stream of the projects it
//! follows, rolls the engine's appends up into one `stream_append` frame per window for its
//! viewers, gives a viewer that joins a `stream_snapshot` of each, and ends streams left quiet.
//!
//! Presence: each subscription added or removed is reported to the engine
//! ([`Engine::presence_join`] / [`Engine::presence_leave`]), which announces joins and leaves
//! back through every task's [`LocalDelivery`]; the hub passes them to the other members that
//! asked (`join_leave`), behind their confirmation like a publication.
//!
//! Subscriptions are confirmed by the hub, after it registered them, so a client never sees a
//! project's message before its `subscription_confirmed`. A resume (`since`) replays the missed
//! publications right after the confirmation, a page at a time as the client reads them
//! ([`replay`]). Until the history read returns and the replay has caught up, live publications
//! for that member are held back in order and released after the replay, minus those the replay
//! already contained: no gap and no duplicate at the seam.
//!
//! **Mailbox: [`HUB_MAILBOX_CAPACITY`] messages.** Client-driven messages (subscribe,
//! unsubscribe) are sent with `try_send`: when full the client gets `busy`. `Connect` is awaited
//! by the upgrade handler, so accepting slows down instead of queueing. `Disconnect` uses
//! `do_send`, which ignores the bound: there is exactly one per connection, so it is bounded by
//! the number of connections, and losing one would leak a registry entry. The engine's
//! deliveries ([`Deliver`], [`PresenceEvent`]) use `do_send` too, because the engine's order
//! must be the mailbox's (a `send` that waits for room would let a later one overtake it); each
//! caller waits for its delivery's answer before the next (a publisher for its receipt, bounded
//! by its HTTP request or the session's in-flight budget; the Redis subscriber for each message
//! of its connection), so they are bounded by the number of callers. The memory engine's join
//! and leave events are not waited for: one per subscription change the hub itself made. Stream
//! appends are waited for only past [`APPENDS_UNWAITED_MAX`] unhandled ([`AppendsInMailbox`]),
//! and while a stream's rollup window is open they skip the mailbox: kept beside it
//! ([`streams::KeptAppends`]) for the window's end.

mod replay;
pub(crate) mod streams;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, PoisonError, RwLock,
    },
    time::Duration,
};

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use prometheus::IntCounter;
use tokio::sync::oneshot;

use crate::{
    connection::{
        outbox::{Outbox, PushError},
        ConnectionId,
    },
    engine::{
        positions::Recovery,
        presence::{Change, Member},
        streams::{End, EndOutcome, StreamSnapshot},
        Engine, EngineError, LocalDelivery,
    },
    metrics::Metrics,
    protocol::{
        request::ProjectId,
        streams::{StreamId, StreamStatus},
        CloseCode, Reply, RequestId, StreamPosition,
    },
};
pub(crate) use replay::HoldLimits;
use replay::{Replay, Seam, Ticket};
use streams::{Applied, KeptAppends, ProjectStreams, StreamHubSettings, StreamPublication};

/// How long after a failed read of a project's streams the hub tries again.
const STREAM_REREAD_DELAY: Duration = Duration::from_secs(1);

/// Longest a subscribe waits on the engine (its channel subscribed, its history read) before it
/// is confirmed without a position: a back end that hangs must not hold a client's confirmation.
const ENGINE_WAIT: Duration = Duration::from_secs(2);

/// Messages the hub's mailbox holds before senders are told to back off.
pub(crate) const HUB_MAILBOX_CAPACITY: usize = 4096;

/// Registers a connection. Its outbox is where the hub delivers. Answered, when a project named
/// on the URL is this task's first follower of it and the engine's subscribe did not complete at
/// once, with what resolves when it did (or `ENGINE_WAIT` passed): the connection is not greeted
/// before, so a client that was greeted receives every publication made after.
#[derive(Message)]
#[rtype(result = "Option<BoxFuture<'static, ()>>")]
pub(crate) struct Connect {
    pub id: ConnectionId,
    pub outbox: Outbox,
    /// Projects named on the URL (`?project_id=`), subscribed silently as the original did.
    pub projects: Vec<ProjectId>,
    /// Told to drain when the server shuts down.
    pub session: Recipient<Drain>,
    /// The connection as presence shows it, for the projects named on the URL.
    pub member: Arc<Member>,
}

/// A connection ended: forget it and its subscriptions.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Disconnect {
    pub id: ConnectionId,
}

/// Adds a subscription, replays what a resuming client missed, and confirms.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Subscribe {
    pub id: ConnectionId,
    pub project_id: ProjectId,
    pub request_id: Option<RequestId>,
    /// Resume after this position.
    pub since: Option<StreamPosition>,
    /// Put the project's position in the confirmation.
    pub with_position: bool,
    /// Deliver the project's join and leave events.
    pub join_leave: bool,
    /// The connection as presence shows it (its identity may have changed since it connected).
    pub member: Arc<Member>,
}

/// Removes a subscription and confirms it to the client.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unsubscribe {
    pub id: ConnectionId,
    pub project_id: ProjectId,
    pub confirmation: ByteString,
}

/// A publication from the engine ([`LocalDelivery::publication`]), for local subscribers;
/// answered with how many it was queued to.
#[derive(Message)]
#[rtype(result = "()")]
struct Deliver {
    project_id: ProjectId,
    /// None: the back end did not take it (then it has no place in the history).
    position: Option<StreamPosition>,
    /// The encoded frame, position included.
    frame: ByteString,
    reached: oneshot::Sender<usize>,
}

/// Starts the drain: every connection is told to close with 1012, spread over `window`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DrainAll {
    pub window: Duration,
    /// Answered when the last connection has left the registry (at once if none is there).
    pub emptied: tokio::sync::oneshot::Sender<()>,
}

/// Sent to each session by the drain.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;

/// Closes every registered connection at once (used when the drain window is over).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CloseAll {
    pub code: CloseCode,
}

/// A join or leave event of a project, from the engine ([`LocalDelivery::presence_change`]),
/// for the members that asked for them; answered once handed over.
#[derive(Message)]
#[rtype(result = "()")]
struct PresenceEvent {
    project_id: ProjectId,
    change: Change,
    /// Whose join or leave: that connection is not told about itself.
    connection_id: ConnectionId,
    /// `{"type":"join"|"leave",...}`, encoded once.
    frame: ByteString,
    handed_over: oneshot::Sender<()>,
}

/// An append to a stream, from the engine ([`LocalDelivery::stream_append`]); answered once
/// handed over when its sender waits (see [`AppendsInMailbox`]).
#[derive(Message)]
#[rtype(result = "()")]
struct StreamAppended {
    project_id: ProjectId,
    stream_id: StreamId,
    text: ByteString,
    length: u64,
    handed_over: Option<oneshot::Sender<()>>,
}

/// Appends queued with `do_send` that the hub has not handled yet, and the bound under which
/// their senders do not wait for the hand-over.
///
/// **Why not wait for each**: an agent streams a token every few milliseconds, so each wait
/// was a wake-up of the hub's thread and then one of the appender's, twice per append, on an
/// otherwise idle server: the largest cost of an append after the frames themselves
/// (docs/benchmarks.md, "Agent streams"). Order does not need the wait (the mailbox keeps the
/// engine's order); the mailbox's bound does. **When full** (the hub is
/// [`APPENDS_UNWAITED_MAX`] appends behind): each further append waits for its hand-over, as
/// every append once did, so the appenders' per-connection queues fill and answer `busy`, and
/// the Redis subscriber reads its connection no faster than the hub takes the appends.
#[derive(Default)]
struct AppendsInMailbox(AtomicUsize);

/// Appends the hub may be behind before their senders wait: about one second of the largest
/// stream load measured (docs/benchmarks.md, 1,500 appends/s), a few hundred KiB of text.
const APPENDS_UNWAITED_MAX: usize = 2048;

/// Each project's local subscribers, as the hub last changed them: the engine reads a
/// publication's receipt count here rather than asking the hub and waiting for an answer.
#[derive(Default)]
struct SubscriberCounts(RwLock<HashMap<ProjectId, usize>>);

impl SubscriberCounts {
    fn get(&self, project_id: &ProjectId) -> usize {
        // Each change is one map operation: a panic cannot leave it half done.
        self.0.read().unwrap_or_else(PoisonError::into_inner).get(project_id).copied().unwrap_or(0)
    }

    fn set(&self, project_id: &ProjectId, count: usize) {
        let mut counts = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if count == 0 {
            counts.remove(project_id);
        } else {
            counts.insert(project_id.clone(), count);
        }
    }
}

/// The hub as the engine sees it: its [`LocalDelivery`]. Deliveries are queued with `do_send`
/// when called, so the engine's order is the mailbox's (see the mailbox note above).
struct HubDelivery {
    hub: Addr<Hub>,
    counts: Arc<SubscriberCounts>,
    appends: Arc<AppendsInMailbox>,
    kept: Arc<KeptAppends>,
}

impl LocalDelivery for HubDelivery {
    fn publication(
        &self,
        project_id: &ProjectId,
        position: Option<StreamPosition>,
        frame: ByteString,
    ) -> BoxFuture<'static, usize> {
        let (reached, answer) = oneshot::channel();
        self.hub.do_send(Deliver { project_id: project_id.clone(), position, frame, reached });
        // No answer: the hub stopped, and nobody was reached.
        async move { answer.await.unwrap_or(0) }.boxed()
    }

    fn presence_change(
        &self,
        project_id: &ProjectId,
        change: Change,
        connection_id: ConnectionId,
        frame: ByteString,
    ) -> BoxFuture<'static, ()> {
        let (handed_over, answer) = oneshot::channel();
        self.hub.do_send(PresenceEvent { project_id: project_id.clone(), change, connection_id, frame, handed_over });
        async move {
            let _ = answer.await;
        }
        .boxed()
    }

    fn subscriber_count(&self, project_id: &ProjectId) -> usize {
        self.counts.get(project_id)
    }

    fn stream_append(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        text: ByteString,
        length: u64,
    ) -> BoxFuture<'static, ()> {
        let Some(text) = self.kept.keep(project_id, stream_id, text, length) else {
            return futures_util::future::ready(()).boxed();
        };
        let behind = self.appends.0.fetch_add(1, Ordering::Relaxed);
        let (handed_over, answer) = if behind < APPENDS_UNWAITED_MAX {
            (None, None)
        } else {
            let (handed_over, answer) = oneshot::channel();
            (Some(handed_over), Some(answer))
        };
        let appended =
            StreamAppended { project_id: project_id.clone(), stream_id: stream_id.clone(), text, length, handed_over };
        self.hub.do_send(appended);
        async move {
            if let Some(answer) = answer {
                let _ = answer.await;
            }
        }
        .boxed()
    }
}

struct Registered {
    outbox: Outbox,
    session: Recipient<Drain>,
    projects: HashSet<ProjectId>,
    member: Arc<Member>,
}

/// One subscriber of a project.
struct Subscriber {
    outbox: Outbox,
    /// While the subscription is being confirmed and replayed: live publications held back.
    /// Boxed: a subscription holds one only while it is confirmed and replayed, and every
    /// subscription of the task would otherwise carry its size.
    seam: Option<Box<Seam>>,
    join_leave: bool,
    /// As reported to the engine when the subscription was added, so its leave matches.
    member: Arc<Member>,
}

pub(crate) struct Hub {
    connections: HashMap<ConnectionId, Registered>,
    subscribers: HashMap<ProjectId, HashMap<ConnectionId, Subscriber>>,
    engine: Arc<dyn Engine>,
    /// `subscribers`' sizes, for the engine.
    counts: Arc<SubscriberCounts>,
    /// Shared with the engine's [`HubDelivery`].
    appends: Arc<AppendsInMailbox>,
    /// Appends kept for open rollup windows, shared with the engine's [`HubDelivery`].
    kept: Arc<KeptAppends>,
    /// Publications held back for one resuming member, at most (then the hold is emptied and
    /// the replay reads them from the history).
    hold: HoldLimits,
    /// Bytes of publications each history read of a replay brings in: HISTORY_PAGE_BYTES, at
    /// most half of OUTBOUND_QUEUE_BYTES.
    replay_page_bytes: usize,
    metrics: Arc<Metrics>,
    message_frames: IntCounter,
    /// Report subscriptions to the engine's presence (PRESENCE).
    presence: bool,
    /// The open streams of each followed project (read from the engine when first followed).
    streams: HashMap<ProjectId, ProjectStreams>,
    stream_settings: StreamHubSettings,
    /// Numbers the reads of projects' streams, so a late answer to an older one is ignored.
    stream_reads: u64,
    /// Numbers the rollup windows, so an end scheduled for a window that closed (or for a copy
    /// dropped since) is ignored.
    stream_windows: u64,
    /// During the drain: told when the registry empties.
    on_empty: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Hub {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        engine: Arc<dyn Engine>,
        hold: HoldLimits,
        replay_page_bytes: usize,
        presence: bool,
        stream_settings: StreamHubSettings,
    ) -> Self {
        let message_frames = metrics.message_frames_out();
        Hub {
            connections: HashMap::new(),
            subscribers: HashMap::new(),
            engine,
            counts: Arc::default(),
            appends: Arc::default(),
            kept: Arc::default(),
            hold,
            replay_page_bytes: replay_page_bytes.max(1),
            metrics,
            message_frames,
            presence,
            on_empty: None,
            streams: HashMap::new(),
            stream_settings,
            stream_reads: 0,
            stream_windows: 0,
        }
    }

    /// Registers a subscription (idempotent; a new one is reported to presence as `member`, or
    /// as the connection was when it connected). `None` when the connection is gone; else, when
    /// this is the project's first local subscriber and the engine's subscribe did not complete
    /// at once, what resolves when it did.
    fn add_subscription(
        &mut self,
        id: &ConnectionId,
        project_id: ProjectId,
        hold: bool,
        join_leave: bool,
        member: Option<&Arc<Member>>,
        ctx: &mut Context<Self>,
    ) -> Option<Option<BoxFuture<'static, ()>>> {
        let registered = self.connections.get_mut(id)?;
        let outbox = registered.outbox.clone();
        let member = member.unwrap_or(&registered.member).clone();
        registered.projects.insert(project_id.clone());
        let members = self.subscribers.entry(project_id.clone()).or_default();
        let mut channel_ready = None;
        let mut first_follow = None;
        if members.is_empty() {
            self.metrics.projects.inc();
            let subscribed = self.engine.subscribe(&project_id).shared();
            if subscribed.clone().now_or_never().is_none() {
                channel_ready = Some(subscribed.clone().boxed());
            }
            first_follow = Some(subscribed);
        }
        match members.get_mut(id) {
            Some(subscriber) => {
                if hold && subscriber.seam.is_none() {
                    subscriber.seam = Some(Box::new(Seam::new()));
                }
                subscriber.join_leave = join_leave;
            }
            None => {
                let seam = hold.then(|| Box::new(Seam::new()));
                members.insert(id.clone(), Subscriber { outbox, seam, join_leave, member: member.clone() });
                self.counts.set(&project_id, members.len());
                self.metrics.subscriptions.inc();
                if self.presence {
                    self.engine.presence_join(&project_id, &member);
                    self.metrics.presence_members.inc();
                    self.metrics.presence_events.with_label_values(&["join"]).inc();
                }
            }
        }
        if let Some(subscribed) = first_follow {
            self.stream_reads += 1;
            self.streams.insert(project_id.clone(), ProjectStreams::reading(self.stream_reads));
            self.read_streams(project_id, Some(subscribed), Duration::ZERO, ctx);
        }
        Some(channel_ready)
    }

    /// Reads the project's open streams (after `subscribed`: the engine delivers the project's
    /// traffic here) for the read in flight, `delay` from now.
    fn read_streams(
        &mut self,
        project_id: ProjectId,
        subscribed: Option<Shared<BoxFuture<'static, ()>>>,
        delay: Duration,
        ctx: &mut Context<Self>,
    ) {
        let Some(read) = self.streams.get(&project_id).and_then(|streams| streams.awaits_read()) else { return };
        let engine = self.engine.clone();
        let reading = async move {
            // A zero delay is no timer: a timer wakes the hub at the driver's next tick, later
            // than what was asked of it meanwhile.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(subscribed) = subscribed {
                let _ = tokio::time::timeout(ENGINE_WAIT, subscribed).await;
            }
            let both = async {
                let streams = engine.open_streams(&project_id).await?;
                let approvals = engine.pending_approvals(&project_id).await?;
                let frames = approvals
                    .iter()
                    .map(|ask| (ask.approval_id.clone(), crate::protocol::approvals::requested_frame(&project_id, ask)))
                    .collect();
                Ok((streams, frames))
            };
            match tokio::time::timeout(ENGINE_WAIT, both).await {
                Ok(answer) => (project_id, answer),
                Err(_) => (project_id, Err(EngineError::Unavailable(format!("no answer within {ENGINE_WAIT:?}")))),
            }
        };
        ctx.spawn(reading.into_actor(self).map(move |(project_id, answer), hub, ctx| {
            hub.streams_read(project_id, read, answer, ctx);
        }));
    }

    /// A read of the project's streams answered.
    fn streams_read(
        &mut self,
        project_id: ProjectId,
        read: u64,
        answer: Result<(Vec<StreamSnapshot>, std::collections::BTreeMap<String, ByteString>), EngineError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(streams) = self.streams.get_mut(&project_id).filter(|streams| streams.awaits(read)) else { return };
        let read_again = match answer {
            Ok((snapshots, approvals)) => streams.read(snapshots, approvals).is_err(),
            Err(error) => {
                log::warn!(project_id = &*project_id, error:% = error; "agent streams unreadable; retrying");
                self.stream_reads += 1;
                streams.reread(self.stream_reads);
                self.read_streams(project_id, None, STREAM_REREAD_DELAY, ctx);
                return;
            }
        };
        if read_again {
            self.reread_streams(project_id, ctx);
            return;
        }
        self.count_open_streams();
        // Every viewer already live gets the streams as read (those in a seam, when it ends).
        let live: Vec<Outbox> = self
            .subscribers
            .get(&project_id)
            .map(|members| {
                members.values().filter(|member| member.seam.is_none()).map(|member| member.outbox.clone()).collect()
            })
            .unwrap_or_default();
        for outbox in live {
            self.send_snapshots(&project_id, &outbox);
        }
    }

    /// The copy of the project's streams misses text: read them again.
    fn reread_streams(&mut self, project_id: ProjectId, ctx: &mut Context<Self>) {
        let Some(streams) = self.streams.get_mut(&project_id) else { return };
        self.stream_reads += 1;
        streams.reread(self.stream_reads);
        log::info!(project_id = &*project_id; "agent stream copy has a gap; reading the project's streams again");
        self.read_streams(project_id, None, Duration::ZERO, ctx);
    }

    /// Sends every viewer of the project the final snapshot of a stream, read from the engine:
    /// for a stream that ended while this task's copy of it missed text. A viewer in its seam
    /// gets it after its replay.
    fn send_final_text(&mut self, project_id: ProjectId, stream_id: StreamId, ctx: &mut Context<Self>) {
        let read = self.engine.stream_snapshot(&project_id, &stream_id);
        let read = async move { tokio::time::timeout(ENGINE_WAIT, read).await };
        ctx.spawn(read.into_actor(self).map(move |answer, hub, _| {
            let error = match answer {
                Ok(Ok(Some(snapshot))) => {
                    let frame = snapshot.frame(&project_id);
                    let (hold, mut live) = (hub.hold, Vec::new());
                    for member in hub.subscribers.get_mut(&project_id).into_iter().flat_map(|members| members.values_mut()) {
                        match &mut member.seam {
                            Some(seam) => seam.hold(0, frame.clone(), hold),
                            None => live.push(member.outbox.clone()),
                        }
                    }
                    for outbox in live {
                        hub.push(&outbox, frame.clone(), "stream_snapshot");
                    }
                    return;
                }
                Ok(Ok(None)) => "the engine no longer keeps it".to_owned(),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {ENGINE_WAIT:?}"),
            };
            log::warn!(
                project_id = &*project_id, stream_id = &*stream_id, error = error.as_str();
                "an agent stream ended while this task's copy missed text, and its final text could not be read: its viewers hold part of it (GET /api/v1/projects/{{P}}/streams/{{S}} has it whole)"
            );
        }));
    }

    fn count_open_streams(&self) {
        let open: usize = self.streams.values().map(|streams| streams.open.len()).sum();
        self.metrics.streams_open.set(open as i64);
    }

    /// A `stream_snapshot` of each open stream of the project, for a viewer that just went live
    /// (nothing while the streams are being read: the read's answer sends them).
    fn send_snapshots(&self, project_id: &ProjectId, outbox: &Outbox) {
        let Some(streams) = self.streams.get(project_id).filter(|streams| streams.is_read()) else { return };
        for (stream_id, stream) in &streams.open {
            self.push(outbox, stream.snapshot(project_id, stream_id), "stream_snapshot");
        }
        for frame in streams.approvals.values() {
            self.push(outbox, frame.clone(), "approval_requested");
        }
    }

    /// Sends a stream's frame to every live viewer of the project.
    fn send_to_viewers(&self, project_id: &ProjectId, frame: ByteString) {
        self.metrics.stream_rollups.inc();
        let Some(members) = self.subscribers.get(project_id) else { return };
        for member in members.values().filter(|member| member.seam.is_none()) {
            self.push(&member.outbox, frame.clone(), "stream_append");
        }
    }

    /// An append the engine delivered (through the mailbox, or kept for a window), applied to
    /// the project's copy in the engine's order.
    fn apply_append(
        &mut self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        text: ByteString,
        length: u64,
        ctx: &mut Context<Self>,
    ) {
        let Some(streams) = self.streams.get_mut(project_id) else { return };
        self.metrics.stream_appends_delivered.inc();
        // The number a window opened by this append gets.
        let window = (!self.stream_settings.rollup.is_zero()).then_some(self.stream_windows + 1);
        match streams.append(stream_id, text, length, window) {
            Applied::Nothing | Applied::Pending => {}
            Applied::Reread => self.reread_streams(project_id.clone(), ctx),
            Applied::SendNowAndOpenWindow => {
                let pending =
                    streams.open.get_mut(stream_id).and_then(|stream| stream.take_pending(project_id, stream_id));
                if let Some(frame) = pending {
                    self.send_to_viewers(project_id, frame);
                }
                if let Some(number) = window {
                    self.stream_windows = number;
                    self.kept.open(project_id, stream_id, number);
                    self.schedule_window_end(project_id.clone(), stream_id.clone(), number, ctx);
                }
            }
        }
    }

    /// Applies what was kept for the stream's window.
    fn apply_kept(&mut self, project_id: &ProjectId, stream_id: &StreamId, ctx: &mut Context<Self>) -> bool {
        let kept = self.kept.take(project_id, stream_id);
        let any = !kept.is_empty();
        for (text, length) in kept {
            self.apply_append(project_id, stream_id, text, length, ctx);
        }
        any
    }

    /// Rollup window `number` of the stream ended: what was kept for it is applied, then what
    /// is pending goes out in one frame and the window goes on, or it closes.
    fn window_ended(&mut self, project_id: ProjectId, stream_id: StreamId, number: u64, ctx: &mut Context<Self>) {
        let kept = self.kept.clone();
        let frame = loop {
            while self.apply_kept(&project_id, &stream_id, ctx) {}
            // Under the lock, so no append is kept for a window that is closing.
            let mut kept = kept.lock();
            let streams = kept.get_mut(&*project_id);
            let appends_arrived = streams
                .as_ref()
                .and_then(|streams| streams.get(&*stream_id))
                .is_some_and(|kept| !kept.appends.is_empty());
            if appends_arrived {
                // Between the two looks: take them too, then decide.
                continue;
            }
            let frame = self
                .streams
                .get_mut(&project_id)
                .and_then(|streams| streams.window_ended(&project_id, &stream_id, number));
            if frame.is_none() {
                if let Some(streams) = streams {
                    if streams.get(&*stream_id).is_some_and(|kept| kept.window == number) {
                        streams.remove(&*stream_id);
                    }
                }
            }
            break frame;
        };
        if let Some(frame) = frame {
            self.send_to_viewers(&project_id, frame);
            self.schedule_window_end(project_id, stream_id, number, ctx);
        }
    }

    fn schedule_window_end(
        &mut self,
        project_id: ProjectId,
        stream_id: StreamId,
        number: u64,
        ctx: &mut Context<Self>,
    ) {
        ctx.run_later(self.stream_settings.rollup, move |hub, ctx| {
            hub.window_ended(project_id, stream_id, number, ctx)
        });
    }

    /// Asks the engine to end the streams left quiet past STREAM_IDLE_TIMEOUT_SECS as
    /// `abandoned`.
    fn end_idle_streams(&mut self, ctx: &mut Context<Self>) {
        let idle_timeout = self.stream_settings.idle_timeout;
        let mut idle = Vec::new();
        for (project_id, streams) in &mut self.streams {
            for (stream_id, stream) in streams.open.iter_mut().filter(|(_, stream)| stream.is_idle(idle_timeout)) {
                stream.abandoning = true;
                idle.push((project_id.clone(), stream_id.clone()));
            }
        }
        for (project_id, stream_id) in idle {
            {
                let end = End {
                    stream_id: stream_id.clone(),
                    status: StreamStatus::Abandoned,
                    data: serde_json::Value::Null,
                    only_if_idle: true,
                };
                let ending = self.engine.stream_end(&project_id, end);
                ctx.spawn(ending.into_actor(self).map(move |outcome, hub, _| {
                    if let Ok(EndOutcome::Ended { .. }) = outcome {
                        hub.metrics.streams_abandoned.inc();
                        log::info!(project_id = &*project_id, stream_id = &*stream_id; "agent stream abandoned: idle past STREAM_IDLE_TIMEOUT_SECS");
                        return;
                    }
                    let stream = hub.streams.get_mut(&project_id).and_then(|streams| streams.open.get_mut(&stream_id));
                    if let Some(stream) = stream {
                        // Not idle on the engine (a later append elsewhere), or not reachable:
                        // counted from now.
                        stream.touched();
                    }
                }));
            }
        }
    }

    /// Answers the drain once no connection is registered.
    fn tell_if_empty(&mut self) {
        if self.connections.is_empty() {
            if let Some(emptied) = self.on_empty.take() {
                let _ = emptied.send(());
            }
        }
    }

    fn remove_subscription(&mut self, id: &ConnectionId, project_id: &ProjectId) {
        let Some(members) = self.subscribers.get_mut(project_id) else {
            return;
        };
        let Some(subscriber) = members.remove(id) else {
            return;
        };
        self.counts.set(project_id, members.len());
        self.metrics.subscriptions.dec();
        if self.presence {
            self.engine.presence_leave(project_id, &subscriber.member);
            self.metrics.presence_members.dec();
            self.metrics.presence_events.with_label_values(&["leave"]).inc();
        }
        if members.is_empty() {
            self.subscribers.remove(project_id);
            self.metrics.projects.dec();
            self.engine.unsubscribe(project_id);
            self.kept.forget(project_id);
            if self.streams.remove(project_id).is_some() {
                self.count_open_streams();
            }
        }
    }

    fn push(&self, outbox: &Outbox, frame: ByteString, kind: &str) {
        match outbox.push_text(frame) {
            Ok(()) => self.metrics.frame_out(kind),
            Err(PushError::Full) => log::warn!(kind = kind; "outbound queue full, closing slow consumer"),
            Err(PushError::Closed) => {}
        }
    }

    /// Pushes a publication to every member of the project (those in a seam hold `held` when
    /// given, else the frame); returns how many it reached.
    fn fan_out(&mut self, project_id: &ProjectId, offset: u64, frame: &ByteString, held: Option<&ByteString>) -> usize {
        let Some(members) = self.subscribers.get_mut(project_id) else {
            self.metrics.publish_fanout.observe(0.0);
            return 0;
        };
        let mut reached = 0;
        for member in members.values_mut() {
            if let Some(seam) = &mut member.seam {
                seam.hold(offset, held.unwrap_or(frame).clone(), self.hold);
                reached += 1;
                continue;
            }
            match member.outbox.push_text(frame.clone()) {
                Ok(()) => reached += 1,
                Err(PushError::Full) => {
                    log::warn!(project_id = &**project_id; "outbound queue full, closing slow consumer");
                }
                Err(PushError::Closed) => {}
            }
        }
        self.message_frames.inc_by(reached as u64);
        self.metrics.deliveries.inc_by(reached as u64);
        self.metrics.publish_fanout.observe(reached as f64);
        reached
    }

    /// Confirms a subscription, then starts the replay of a recovery into the member's outbox
    /// (which releases what was held back once it caught up), or releases the hold at once when
    /// there is nothing to replay. `ticket`: the subscribe's place on the member's seam (None
    /// when it went without one, the engine being down); only the latest subscribe through a
    /// seam replays and releases it, an earlier one only confirms.
    fn complete_subscription(
        &mut self,
        request: &Subscribe,
        recovery: Option<Recovery>,
        ticket: Option<Ticket>,
        ctx: &mut Context<Self>,
    ) {
        let Subscribe { id, project_id, request_id, since, with_position, .. } = request;
        let (request_id, resumed, with_position) = (request_id.as_ref(), since.is_some(), *with_position);
        let Some(member) = self.subscribers.get_mut(project_id).and_then(|members| members.get_mut(id)) else {
            return;
        };
        let outbox = member.outbox.clone();
        let current = match (&member.seam, &ticket) {
            (Some(seam), Some(ticket)) => seam.is_current(ticket),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let seam = if current { member.seam.take() } else { None };
        let recovered = recovery.as_ref().is_some_and(|recovery| recovery.recovered);
        if resumed {
            let outcome = if recovered { "recovered" } else { "not_recovered" };
            self.metrics.recoveries.with_label_values(&[outcome]).inc();
        }
        let confirmation = Reply::SubscriptionConfirmed {
            project_id,
            recovered: resumed.then_some(recovered),
            position: recovery.as_ref().filter(|_| with_position).map(|recovery| &recovery.top),
        }
        .to_frame(request_id);
        self.push(&outbox, confirmation, "subscription_confirmed");
        let Some(mut seam) = seam else { return };
        let project_id = project_id.clone();
        let emptied = ticket.as_ref().is_some_and(|ticket| seam.emptied_since(ticket));
        let Some(recovery) = recovery else {
            if emptied {
                // Without a position there is no history to read what the hold let go of.
                log::warn!(project_id = &*project_id; "hold overflowed before the subscription had a position; closing slow consumer");
                outbox.close(CloseCode::SlowConsumer);
            } else {
                for frame in seam.release(0) {
                    self.push(&outbox, frame, "message");
                }
                self.send_snapshots(&project_id, &outbox);
            }
            return;
        };
        let complete = recovery.complete();
        let Recovery { recovered, frames, top } = recovery;
        let ticket = match ticket {
            Some(ticket) if emptied || !complete || !frames.is_empty() => ticket,
            _ => {
                for frame in seam.release(top.offset) {
                    self.push(&outbox, frame, "message");
                }
                self.send_snapshots(&project_id, &outbox);
                return;
            }
        };
        // Replayed from `since` when recovered; else the client follows on from the top, and
        // the replay reads only what the emptied hold let go of.
        let after = match since {
            Some(since) if recovered => since.offset,
            _ => top.offset,
        };
        let replay = Replay {
            engine: self.engine.clone(),
            hub: ctx.address(),
            metrics: self.metrics.clone(),
            outbox,
            connection_id: id.clone(),
            project_id: project_id.clone(),
            page_bytes: self.replay_page_bytes,
            position: StreamPosition { offset: after, epoch: top.epoch },
            page: frames.into(),
            page_top: top.offset,
            read_generation: ticket.generation(),
        };
        seam.start(&ticket, replay);
        if let Some(member) = self.subscribers.get_mut(&project_id).and_then(|members| members.get_mut(id)) {
            member.seam = Some(seam);
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(HUB_MAILBOX_CAPACITY);
        let delivery = HubDelivery {
            hub: ctx.address(),
            counts: self.counts.clone(),
            appends: self.appends.clone(),
            kept: self.kept.clone(),
        };
        self.engine.start(Arc::new(delivery));
        ctx.run_interval(self.stream_settings.idle_sweep, |hub, ctx| hub.end_idle_streams(ctx));
    }
}

impl Handler<Connect> for Hub {
    type Result = Option<BoxFuture<'static, ()>>;

    fn handle(&mut self, msg: Connect, ctx: &mut Self::Context) -> Self::Result {
        let id = msg.id.clone();
        let outbox = msg.outbox.clone();
        let registered =
            Registered { outbox: msg.outbox, session: msg.session, projects: HashSet::new(), member: msg.member };
        self.connections.insert(msg.id, registered);
        let mut channels_ready = Vec::new();
        for project_id in msg.projects {
            if let Some(Some(ready)) = self.add_subscription(&id, project_id.clone(), false, false, None, ctx) {
                channels_ready.push(ready);
            }
            self.send_snapshots(&project_id, &outbox);
        }
        (!channels_ready.is_empty()).then(|| {
            async move {
                let _ = tokio::time::timeout(ENGINE_WAIT, futures_util::future::join_all(channels_ready)).await;
            }
            .boxed()
        })
    }
}

impl Handler<Disconnect> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        if let Some(registered) = self.connections.remove(&msg.id) {
            for project_id in &registered.projects {
                self.remove_subscription(&msg.id, project_id);
            }
        }
        self.tell_if_empty();
    }
}

impl Handler<Subscribe> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) {
        if self.engine.health().is_lost() {
            // Answered at once, without a position (the engine follows the project again when
            // its back end is back).
            log::debug!(project_id = &*msg.project_id; "engine down; subscribing without position");
            if self
                .add_subscription(&msg.id, msg.project_id.clone(), false, msg.join_leave, Some(&msg.member), ctx)
                .is_some()
            {
                self.complete_subscription(&msg, None, None, ctx);
                let outbox = self.connections.get(&msg.id).map(|registered| registered.outbox.clone());
                if let Some(outbox) = outbox {
                    self.send_snapshots(&msg.project_id, &outbox);
                }
            }
            return;
        }
        let reads_history = msg.since.is_some() || msg.with_position;
        // Held until confirmed: whatever arrives before the confirmation waits behind it.
        let added =
            self.add_subscription(&msg.id, msg.project_id.clone(), true, msg.join_leave, Some(&msg.member), ctx);
        let Some(channel_ready) = added else {
            return;
        };
        let ticket = self
            .subscribers
            .get_mut(&msg.project_id)
            .and_then(|members| members.get_mut(&msg.id))
            .and_then(|subscriber| subscriber.seam.as_mut())
            .map(|seam| seam.begin());
        if channel_ready.is_none() && !reads_history {
            // Nothing to wait for and nothing to read.
            self.complete_subscription(&msg, None, ticket, ctx);
            return;
        }
        let engine = self.engine.clone();
        let project_id = msg.project_id.clone();
        let since = msg.since.clone();
        let first_page_bytes = self.replay_page_bytes;
        let read = async move {
            if let Some(ready) = channel_ready {
                let _ = tokio::time::timeout(ENGINE_WAIT, ready).await;
            }
            if !reads_history {
                return Ok(None);
            }
            match tokio::time::timeout(ENGINE_WAIT, engine.recover(&project_id, since.as_ref(), first_page_bytes)).await
            {
                Ok(read) => read.map(Some).map_err(|error| error.to_string()),
                Err(_) => Err(format!("no answer within {ENGINE_WAIT:?}")),
            }
        };
        ctx.spawn(read.into_actor(self).map(move |result, hub, ctx| {
            let recovery = result.unwrap_or_else(|error| {
                log::warn!(project_id = &*msg.project_id, error = error.as_str(); "history unavailable; subscribing without position");
                None
            });
            hub.complete_subscription(&msg, recovery, ticket, ctx);
        }));
    }
}

impl Handler<Unsubscribe> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        let Some(registered) = self.connections.get_mut(&msg.id) else {
            return;
        };
        registered.projects.remove(&msg.project_id);
        let outbox = registered.outbox.clone();
        self.remove_subscription(&msg.id, &msg.project_id);
        self.push(&outbox, msg.confirmation, "unsubscription_confirmed");
    }
}

impl Handler<Deliver> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let offset = msg.position.as_ref().map_or(0, |position| position.offset);
        let mut held = None;
        match self.streams.contains_key(&msg.project_id).then(|| StreamPublication::of(&msg.frame)).flatten() {
            Some(StreamPublication::Started(started)) => {
                let overflowed = self
                    .streams
                    .get_mut(&msg.project_id)
                    .is_some_and(|streams| streams.started(started.stream_id.into(), started.meta));
                if overflowed {
                    self.reread_streams(msg.project_id.clone(), ctx);
                }
                self.count_open_streams();
            }
            Some(StreamPublication::ApprovalRequested(approval_id, frame)) => {
                let overflowed = self
                    .streams
                    .get_mut(&msg.project_id)
                    .is_some_and(|streams| streams.approval_requested(approval_id, frame));
                if overflowed {
                    self.reread_streams(msg.project_id.clone(), ctx);
                }
            }
            Some(StreamPublication::ApprovalResolved(approval_id)) => {
                let overflowed =
                    self.streams.get_mut(&msg.project_id).is_some_and(|streams| streams.approval_resolved(approval_id));
                if overflowed {
                    self.reread_streams(msg.project_id.clone(), ctx);
                }
            }
            Some(StreamPublication::Ended(ended)) => {
                // What was kept for its window was appended before its end.
                let stream_id: StreamId = ended.stream_id.as_str().into();
                while self.apply_kept(&msg.project_id, &stream_id, ctx) {}
                let followed = self.streams.contains_key(&msg.project_id);
                let copy = self.streams.get_mut(&msg.project_id).and_then(|streams| streams.ended(&ended.stream_id));
                if !copy.as_ref().is_some_and(|copy| copy.holds_whole(&ended)) && followed {
                    // This task's copy misses text (appends lost across a Redis reconnect, its
                    // read again still in flight): the viewers get the final text after the end.
                    self.send_final_text(msg.project_id.clone(), stream_id, ctx);
                }
                if let Some(mut copy) = copy {
                    // What the window still held goes first; a viewer in its seam gets the whole
                    // stream in place of the end.
                    if let Some(pending) = copy.take_pending(&msg.project_id, &ended.stream_id) {
                        self.send_to_viewers(&msg.project_id, pending);
                    }
                    held = copy.final_snapshot(&msg.project_id, &ended.stream_id, &ended).zip(msg.position.as_ref());
                }
                self.count_open_streams();
            }
            None => {}
        }
        let held = held.map(|(snapshot, position)| position.spliced_into(&snapshot));
        let reached = self.fan_out(&msg.project_id, offset, &msg.frame, held.as_ref());
        // The caller may have stopped waiting for the count.
        let _ = msg.reached.send(reached);
    }
}

impl Handler<StreamAppended> for Hub {
    type Result = ();

    fn handle(&mut self, msg: StreamAppended, ctx: &mut Self::Context) {
        self.appends.0.fetch_sub(1, Ordering::Relaxed);
        if let Some(handed_over) = msg.handed_over {
            let _ = handed_over.send(());
        }
        self.apply_append(&msg.project_id, &msg.stream_id, msg.text, msg.length, ctx);
    }
}

impl Handler<PresenceEvent> for Hub {
    type Result = ();

    fn handle(&mut self, msg: PresenceEvent, _: &mut Self::Context) {
        // Answered whatever happens below; the caller may not be waiting.
        let _ = msg.handed_over.send(());
        let Some(members) = self.subscribers.get_mut(&msg.project_id) else { return };
        let kind = msg.change.label();
        let others = members.iter_mut().filter(|(id, _)| **id != msg.connection_id).map(|(_, subscriber)| subscriber);
        for subscriber in others.filter(|subscriber| subscriber.join_leave) {
            match &mut subscriber.seam {
                // Behind the confirmation, like a publication without a position.
                Some(seam) => seam.hold(0, msg.frame.clone(), self.hold),
                None => match subscriber.outbox.push_text(msg.frame.clone()) {
                    Ok(()) => self.metrics.frame_out(kind),
                    Err(PushError::Full) => {
                        log::warn!(project_id = &*msg.project_id; "outbound queue full, closing slow consumer")
                    }
                    Err(PushError::Closed) => {}
                },
            }
        }
    }
}

/// The drain's granularity: closes due within one tick are sent together.
const DRAIN_TICK: Duration = Duration::from_millis(50);

impl Handler<DrainAll> for Hub {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: DrainAll, _: &mut Self::Context) -> Self::Result {
        self.on_empty = Some(msg.emptied);
        self.tell_if_empty();
        let mut pending: Vec<Recipient<Drain>> =
            self.connections.values().map(|registered| registered.session.clone()).collect();
        // Spread the reconnects evenly over the window, in random order: client i of n is told
        // at i/n of the window (those due within one tick go together).
        fastrand::shuffle(&mut pending);
        log::info!(
            connections = pending.len(), window_ms = msg.window.as_millis() as u64;
            "draining connections with 1012 (service restart)"
        );
        let drain = async move {
            let started = tokio::time::Instant::now();
            let count = pending.len().max(1) as f64;
            for (index, session) in pending.into_iter().enumerate() {
                let due = started + msg.window.mul_f64(index as f64 / count);
                if due > tokio::time::Instant::now() + DRAIN_TICK {
                    tokio::time::sleep_until(due).await;
                }
                session.do_send(Drain);
            }
        };
        Box::pin(drain.into_actor(self))
    }
}

impl Handler<CloseAll> for Hub {
    type Result = ();

    fn handle(&mut self, msg: CloseAll, _: &mut Self::Context) {
        for registered in self.connections.values() {
            registered.outbox.close(msg.code);
        }
    }
}

#[cfg(test)]
mod tests;
