//! A resume's replay, fed into the subscriber's outbound queue as the client reads it, and the
//! seam where it meets the live stream.
//!
//! The hub confirms a resuming subscription with the first page of the history in hand
//! ([`Engine::recover`], at most the replay's page bytes). From there a [`Replay`] task (one per
//! resuming subscription, on the hub's thread) pushes the page with [`Outbox::push_replay`],
//! waits on [`Outbox::replay_room`] whenever the queue is at its replay share, reads the next
//! page after the last offset it pushed ([`Engine::history`]), and so on until a page reaches
//! the project's top; then it asks the hub ([`ReplayCaughtUp`]) to release what the [`Seam`]
//! held back meanwhile. A replay of any length thus goes at the client's pace, and a client that
//! reads promptly is never closed for it. Memory per resuming subscription: one page (at most
//! HISTORY_PAGE_BYTES and half of OUTBOUND_QUEUE_BYTES) and the hold (at most a quarter of the
//! queue).
//!
//! **The seam.** While a subscription is being confirmed and replayed, its live publications are
//! held back, in order. A full hold is emptied instead of closing the client: what it held is in
//! the history (an engine keeps a publication before any subscriber gets it), so the replay
//! reads it from there. Each emptying bumps the seam's generation, and the hub releases the hold
//! only to a replay whose last read started after the last emptying (the same generation): every
//! publication is then in that read or in the hold, and the hold drops what the replay already
//! sent (by offset): no gap and no duplicate. Otherwise the replay reads on. Join/leave events
//! and publications without a position (the back end was down) are not in the history: an
//! emptied hold loses them, and both are at most once anyway. A hold that overflows before the
//! subscription has a position to read from (the history could not be read) closes the client
//! with 3008, as before.
//!
//! **When the history cannot continue a replay** (trimmed past it, its epoch changed, or it
//! could not be read), the subscription is confirmed again with `recovered: false` and the
//! project's current position (none when it could not be read), and continues live from there:
//! what a resume the history does not cover gets.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use actix::prelude::*;
use bytestring::ByteString;
use tokio_util::sync::CancellationToken;

use super::{Hub, ENGINE_WAIT};
use crate::{
    connection::{
        outbox::{NotQueued, Outbox},
        ConnectionId,
    },
    engine::{positions::covers, Engine},
    metrics::Metrics,
    protocol::{request::ProjectId, Reply, StreamPosition},
};

/// How much a seam holds back per subscriber: a quarter of the outbound queue
/// (OUTBOUND_QUEUE_MESSAGES and OUTBOUND_QUEUE_BYTES), so that a hold released on top of a
/// replay's share (half) leaves a quarter for the live frames that follow before the client
/// reads. (Half, as it was, filled the queue to the brim: the next live frame closed a client
/// that was reading promptly, 3008.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct HoldLimits {
    pub messages: usize,
    pub bytes: usize,
}

impl HoldLimits {
    /// A quarter of an outbound queue of `messages` and `bytes` (at least one message).
    pub(crate) fn quarter_of_queue(messages: usize, bytes: usize) -> Self {
        HoldLimits { messages: (messages / 4).max(1), bytes: bytes / 4 }
    }
}

/// What a subscribe knew when it started: which one it is on its seam, and the hold's
/// generation then.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket {
    subscribe: u64,
    generation: u64,
}

impl Ticket {
    /// The hold's generation when the subscribe started.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }
}

/// The replay task feeding a seam's subscriber; cancelled when the seam ends.
struct ReplayHandle {
    /// The ticket number of the subscribe that started it.
    id: u64,
    cancel: CancellationToken,
}

/// One subscriber's live publications held back while its subscription is confirmed and
/// replayed, and the replay that feeds it.
pub(super) struct Seam {
    held: Vec<(u64, ByteString)>,
    held_bytes: usize,
    /// Bumped each time the hold is emptied; the replay reads it before each history read.
    generation: Arc<AtomicU64>,
    /// The latest subscribe through this seam: an older one's completion only confirms.
    latest: u64,
    replay: Option<ReplayHandle>,
}

impl Seam {
    pub(super) fn new() -> Self {
        Seam { held: Vec::new(), held_bytes: 0, generation: Arc::default(), latest: 0, replay: None }
    }

    /// A subscribe goes through this seam: it supersedes the earlier ones, and stops the replay
    /// one of them started (what the client gets from here is the new subscribe's to decide).
    pub(super) fn begin(&mut self) -> Ticket {
        self.stop_replay();
        self.latest += 1;
        Ticket { subscribe: self.latest, generation: self.generation() }
    }

    /// Whether `ticket`'s subscribe is still the latest through this seam.
    pub(super) fn is_current(&self, ticket: &Ticket) -> bool {
        ticket.subscribe == self.latest
    }

    /// Whether the hold was emptied since `ticket` was taken.
    pub(super) fn emptied_since(&self, ticket: &Ticket) -> bool {
        self.generation() != ticket.generation
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Holds a live publication (offset 0: an event without position). A full hold is emptied
    /// first: its publications are read from the history instead.
    pub(super) fn hold(&mut self, offset: u64, frame: ByteString, limits: HoldLimits) {
        let full = !self.held.is_empty()
            && (self.held.len() >= limits.messages || self.held_bytes + frame.len() > limits.bytes);
        if full {
            self.held = Vec::new();
            self.held_bytes = 0;
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        self.held_bytes += frame.len();
        self.held.push((offset, frame));
    }

    /// Ends the seam: its held publications after `replayed_until` (and those without a
    /// position), in order.
    pub(super) fn release(mut self, replayed_until: u64) -> impl Iterator<Item = ByteString> {
        std::mem::take(&mut self.held)
            .into_iter()
            .filter(move |(offset, _)| *offset == 0 || *offset > replayed_until)
            .map(|(_, frame)| frame)
    }

    /// Starts `replay` as the one feeding this seam, for the subscribe of `ticket`.
    pub(super) fn start(&mut self, ticket: &Ticket, replay: Replay) {
        self.stop_replay();
        let cancel = CancellationToken::new();
        self.replay = Some(ReplayHandle { id: ticket.subscribe, cancel: cancel.clone() });
        let (id, generation) = (ticket.subscribe, self.generation.clone());
        actix::spawn(async move {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {}
                () = replay.run(id, &generation) => {}
            }
        });
    }

    fn stop_replay(&mut self) {
        if let Some(replay) = self.replay.take() {
            replay.cancel.cancel();
        }
    }

    fn runs(&self, replay: u64) -> bool {
        self.replay.as_ref().is_some_and(|handle| handle.id == replay)
    }
}

impl Drop for Seam {
    /// A seam ends when its hold is released or its subscriber is gone: its replay has nothing
    /// left to do.
    fn drop(&mut self) {
        self.stop_replay();
    }
}

/// From a replay to the hub: it pushed everything up to `replayed_until`, which was the
/// project's top when its last read started. Answered true when the replay is over (the hold was
/// released, or the replay is no longer the seam's), false when it must read on (the hold was
/// emptied since that read started).
#[derive(Message)]
#[rtype(result = "bool")]
pub(super) struct ReplayCaughtUp {
    connection_id: ConnectionId,
    project_id: ProjectId,
    replay: u64,
    replayed_until: u64,
    /// The seam's generation when the last read started; None: the replay gave up (the history
    /// could not be read), so the hold is released whatever it missed.
    read_generation: Option<u64>,
}

impl Handler<ReplayCaughtUp> for Hub {
    type Result = bool;

    fn handle(&mut self, msg: ReplayCaughtUp, _: &mut Self::Context) -> bool {
        let subscriber =
            self.subscribers.get_mut(&msg.project_id).and_then(|members| members.get_mut(&msg.connection_id));
        let Some(subscriber) = subscriber else { return true };
        let Some(seam) = subscriber.seam.as_ref().filter(|seam| seam.runs(msg.replay)) else { return true };
        if msg.read_generation.is_some_and(|generation| generation != seam.generation()) {
            return false;
        }
        let outbox = subscriber.outbox.clone();
        if let Some(seam) = subscriber.seam.take() {
            for frame in seam.release(msg.replayed_until) {
                self.push(&outbox, frame, "message");
            }
            self.send_snapshots(&msg.project_id, &outbox);
        }
        true
    }
}

/// The replay was interrupted: the connection is closing, or the hub no longer runs it.
struct Gone;

/// One resuming subscription's replay; see the module documentation.
pub(super) struct Replay {
    pub engine: Arc<dyn Engine>,
    pub hub: Addr<Hub>,
    pub metrics: Arc<Metrics>,
    pub outbox: Outbox,
    pub connection_id: ConnectionId,
    pub project_id: ProjectId,
    /// Bytes of publications each history read brings in.
    pub page_bytes: usize,
    /// The stream replayed, and the last offset pushed (at first, the one the replay starts
    /// after).
    pub position: StreamPosition,
    /// Publications read and not yet pushed.
    pub page: VecDeque<(u64, ByteString)>,
    /// The project's top offset when `page` was read.
    pub page_top: u64,
    /// The seam's generation when `page`'s read started.
    pub read_generation: u64,
}

impl Replay {
    async fn run(mut self, id: u64, generation: &AtomicU64) {
        // Gone: the connection closes or the subscription ended; nothing to tell anyone.
        let _ = self.feed(id, generation).await;
    }

    async fn feed(&mut self, id: u64, generation: &AtomicU64) -> Result<(), Gone> {
        loop {
            while let Some((offset, frame)) = self.page.pop_front() {
                self.push(frame, "message").await?;
                self.position.offset = offset;
            }
            if self.position.offset >= self.page_top && self.caught_up(id, Some(self.read_generation)).await? {
                return Ok(());
            }
            // The next page is read once the client made room for it, not before.
            self.outbox.replay_room().await;
            self.read_generation = generation.load(Ordering::Relaxed);
            if let Err(current) = self.read_page().await {
                let confirmation = Reply::SubscriptionConfirmed {
                    project_id: &self.project_id,
                    recovered: Some(false),
                    position: current.as_ref(),
                }
                .to_frame(None);
                self.push(confirmation, "subscription_confirmed").await?;
                match current {
                    Some(top) => {
                        self.page_top = top.offset;
                        self.position = top;
                    }
                    None => {
                        self.caught_up(id, None).await?;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Reads the page after the last offset pushed. Err: the history does not continue the
    /// replay, with the project's current position when it could be read.
    async fn read_page(&mut self) -> Result<(), Option<StreamPosition>> {
        let project_id = &*self.project_id;
        let read = self.engine.history(&self.project_id, self.position.offset, usize::MAX, self.page_bytes);
        let (top, entries) = match tokio::time::timeout(ENGINE_WAIT, read).await {
            Ok(Ok(page)) => page,
            Ok(Err(error)) => {
                log::warn!(project_id = project_id, error:% = error; "history unavailable during a replay; confirmed again without position");
                return Err(None);
            }
            Err(_) => {
                log::warn!(project_id = project_id; "no history answer within {ENGINE_WAIT:?} during a replay; confirmed again without position");
                return Err(None);
            }
        };
        if !covers(&self.position, &top, entries.first().map(|(offset, _)| *offset)) {
            log::warn!(
                project_id = project_id, replayed_until = self.position.offset, top = top.offset;
                "the history no longer continues a replay; confirmed again with recovered: false"
            );
            return Err(Some(top));
        }
        self.page = entries.into();
        self.page_top = top.offset;
        Ok(())
    }

    /// Pushes one frame as soon as the queue has room for it.
    async fn push(&self, mut frame: ByteString, kind: &str) -> Result<(), Gone> {
        loop {
            match self.outbox.push_replay(frame) {
                Ok(()) => {
                    self.metrics.frame_out(kind);
                    return Ok(());
                }
                Err(NotQueued::NoRoom(back)) => {
                    frame = back;
                    self.outbox.replay_room().await;
                }
                Err(NotQueued::Closed) => return Err(Gone),
            }
        }
    }

    /// Tells the hub the replay reached the top of its last read; whether the replay is over.
    async fn caught_up(&self, id: u64, read_generation: Option<u64>) -> Result<bool, Gone> {
        let caught_up = ReplayCaughtUp {
            connection_id: self.connection_id.clone(),
            project_id: self.project_id.clone(),
            replay: id,
            replayed_until: self.position.offset,
            read_generation,
        };
        self.hub.send(caught_up).await.map_err(|_| Gone)
    }
}
