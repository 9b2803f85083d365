//! A connection's bounded outbound queue: the push side, held by everyone who sends the client
//! anything.
//!
//! The [`Outbox`] is the only way anything reaches a client: the session's own replies, the
//! hub's fan-out, the dispatcher's confirmations. It is bounded twice, in messages
//! (OUTBOUND_QUEUE_MESSAGES, the [`FrameQueue`]'s capacity) and in bytes (OUTBOUND_QUEUE_BYTES,
//! an atomic counter). **When it is full the client is not reading fast enough: the push fails and
//! the connection is closed with 3008 (slow consumer).** Nobody waits on a slow client, so one
//! can neither grow the server's memory nor hold up a fan-out to others.
//!
//! The receiving end is the upgrade response's body, [`OutboundBody`], which writes the queue
//! into the socket.
//!
//! Closing goes through the connection's [`CloseSignal`] rather than the queue, so it overtakes a
//! full queue; once a close is asked for, nothing more is queued.
//!
//! **A resume's replay is not pushed like the rest.** It is the server's own backlog, which may
//! be far larger than the queue: it is fed with [`Outbox::push_replay`], which queues a frame only
//! while the queue is within its replay share (half its bytes and half its messages; the other
//! half stays free for live frames and replies) and otherwise hands the frame back, never
//! closing; [`Outbox::replay_room`] waits until the client has read the queue down to a quarter.
//! So a replay of any length goes at the client's pace, and a client that reads promptly is
//! never closed for it.

use std::{
    sync::{
        atomic::{fence, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_web::web::Bytes;
use bytestring::ByteString;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{
    frame_queue::{FrameQueue, Refused},
    outbound_body::OutboundBody,
    state::{CloseCause, CloseSignal},
};
use crate::protocol::CloseCode;

/// One item for the socket.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(ByteString),
    Ping,
    Pong(Bytes),
}

/// Why a push did not queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue was over its limit; the connection is now closing as a slow consumer.
    Full,
    /// The connection is already closing.
    Closed,
}

/// Why a frame did not queue: what [`Outbox::push_replay`] answers (a live frame's no room is
/// a slow-consumer close instead: [`PushError::Full`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotQueued {
    /// The queue is past the frame's budget (for a replay, its share): the frame, to push again
    /// after [`Outbox::replay_room`].
    NoRoom(ByteString),
    /// The connection is closing.
    Closed,
}

/// A connection's outbound bounds and pacing (from the configuration).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutboxLimits {
    /// Frames the queue holds (OUTBOUND_QUEUE_MESSAGES).
    pub max_messages: usize,
    /// Bytes of text frames the queue holds (OUTBOUND_QUEUE_BYTES).
    pub max_bytes: usize,
    /// How long the first frame of a write waits for others to join it (WRITE_DELAY_MS).
    pub write_delay: Duration,
}

/// What the queue's two ends share: one allocation per connection.
pub(super) struct Shared {
    pub(super) queue: FrameQueue,
    /// Bytes of text frames queued and not yet taken by the body.
    pub(super) queued_bytes: AtomicUsize,
    pub(super) close: CloseSignal,
    /// Replays waiting for the queue to drain ([`Outbox::replay_room`]); while there are any,
    /// the body wakes them each time it takes frames off the queue.
    pub(super) replay_waiters: AtomicUsize,
    /// Where those replays wait.
    pub(super) drained: Notify,
}

impl Shared {
    fn new(max_messages: usize) -> Self {
        Shared {
            queue: FrameQueue::new(max_messages),
            queued_bytes: AtomicUsize::new(0),
            close: CloseSignal::default(),
            replay_waiters: AtomicUsize::new(0),
            drained: Notify::new(),
        }
    }

    /// Called by the body after it took frames off the queue: wakes the replays waiting for
    /// room. The fence pairs with the one in [`Outbox::replay_room`]: either the waiter sees the
    /// queue already drained or the body sees the waiter.
    pub(super) fn taken(&self) {
        fence(Ordering::SeqCst);
        if self.replay_waiters.load(Ordering::Relaxed) > 0 {
            self.drained.notify_waiters();
        }
    }
}

/// The push side of a connection's outbound queue. Cheap to clone; every clone pushes into the
/// same queue, and once the last is dropped the body ends the connection.
pub(crate) struct Outbox {
    max_bytes: usize,
    shared: Arc<Shared>,
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.queue.add_pusher();
        Outbox { max_bytes: self.max_bytes, shared: self.shared.clone() }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.shared.queue.remove_pusher();
    }
}

impl Outbox {
    /// A new queue and the response body that drains it. `done` hears how the body ended: the
    /// close code it sent, or None when the connection went away first.
    pub(crate) fn new(limits: OutboxLimits, done: oneshot::Sender<Option<CloseCode>>) -> (Self, OutboundBody) {
        let shared = Arc::new(Shared::new(limits.max_messages));
        let body = OutboundBody::new(shared.clone(), limits.write_delay, done);
        (Outbox { max_bytes: limits.max_bytes, shared }, body)
    }

    /// Queues a text frame, or closes the connection as a slow consumer when the queue is full.
    pub(crate) fn push_text(&self, text: ByteString) -> Result<(), PushError> {
        self.enqueue(text, |queued| queued <= self.max_bytes).map_err(|refused| match refused {
            NotQueued::NoRoom(_) => self.overflow(),
            NotQueued::Closed => PushError::Closed,
        })
    }

    /// Queues a frame of a resume's replay if the queue is within its replay share (half of
    /// OUTBOUND_QUEUE_BYTES and half of OUTBOUND_QUEUE_MESSAGES; a frame larger than that still
    /// goes through an empty queue); otherwise hands it back. Never closes the connection.
    pub(crate) fn push_replay(&self, text: ByteString) -> Result<(), NotQueued> {
        self.enqueue(text, |queued| queued <= self.max_bytes / 2 && self.queued_messages() < self.replay_messages())
    }

    /// Queues `text` and counts its bytes if `has_room(the queue's bytes with it)` says so, or
    /// the queue is empty (one frame larger than a budget still goes through); else hands it
    /// back. The one place where frames enter the queue, whichever budget they are held to.
    fn enqueue(&self, text: ByteString, has_room: impl FnOnce(usize) -> bool) -> Result<(), NotQueued> {
        if self.shared.close.cause().is_some() {
            return Err(NotQueued::Closed);
        }
        let len = text.len();
        let queued_bytes = &self.shared.queued_bytes;
        let before = queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && !has_room(before + len) {
            queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(NotQueued::NoRoom(text));
        }
        self.shared.queue.push(Outbound::Text(text)).map_err(|refused| {
            queued_bytes.fetch_sub(len, Ordering::Relaxed);
            match refused {
                Refused::Full(Outbound::Text(text)) => NotQueued::NoRoom(text),
                // The body stopped taking frames (a full queue hands back the text it was given).
                _ => NotQueued::Closed,
            }
        })
    }

    /// Resolves once the client has read the queue down to a quarter of its bytes and of its
    /// messages (half the replay share, so a replay refills it in batches rather than a frame
    /// per write), or the connection is closing.
    pub(crate) async fn replay_room(&self) {
        let shared = &self.shared;
        shared.replay_waiters.fetch_add(1, Ordering::Relaxed);
        // Counted while this waits, however it ends (dropped by a select, or resolved).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _waiting = Waiting(&shared.replay_waiters);
        let closing = shared.close.asked();
        tokio::pin!(closing);
        loop {
            let drained = shared.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            fence(Ordering::SeqCst);
            let roomy = shared.queued_bytes.load(Ordering::Relaxed) <= self.max_bytes / 4
                && self.queued_messages() <= self.replay_messages() / 2;
            if roomy || shared.close.cause().is_some() {
                return;
            }
            tokio::select! {
                () = &mut drained => {}
                () = &mut closing => return,
            }
        }
    }

    /// Frames in the queue (text and control).
    fn queued_messages(&self) -> usize {
        self.shared.queue.len()
    }

    /// Frames a replay may fill the queue with: half of it, at least one.
    fn replay_messages(&self) -> usize {
        (self.shared.queue.capacity() / 2).max(1)
    }

    /// Queues a control frame. A full queue means the peer is not reading; the close that
    /// follows is more useful than the ping.
    pub(crate) fn push_control(&self, control: Outbound) -> Result<(), PushError> {
        match self.shared.queue.push(control) {
            Ok(()) => Ok(()),
            Err(Refused::Full(_)) => Err(self.overflow()),
            Err(Refused::Closed) => Err(PushError::Closed),
        }
    }

    fn overflow(&self) -> PushError {
        self.close(CloseCode::SlowConsumer);
        PushError::Full
    }

    /// Asks the body to close the connection: with a server's close code, or in answer to the
    /// client's close or the socket's loss. Idempotent: the first cause wins.
    pub(crate) fn close(&self, cause: impl Into<CloseCause>) {
        self.shared.close.ask(cause.into());
    }

    /// Why the connection is closing, once a close was asked for.
    pub(crate) fn close_cause(&self) -> Option<CloseCause> {
        self.shared.close.cause()
    }

    /// Resolves once a close has been asked for.
    pub(crate) fn close_asked(&self) -> WaitForCancellationFutureOwned {
        self.shared.close.asked()
    }

    /// Bytes waiting in the queue.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_outbox(max_messages: usize, max_bytes: usize) -> (Outbox, OutboundBody) {
        let limits = OutboxLimits { max_messages, max_bytes, write_delay: Duration::ZERO };
        Outbox::new(limits, oneshot::channel().0)
    }

    #[test]
    fn full_by_count_closes_as_slow_consumer() {
        let (outbox, _body) = test_outbox(2, 1 << 20);
        assert_eq!(outbox.push_text("a".into()), Ok(()));
        assert_eq!(outbox.push_text("b".into()), Ok(()));
        assert_eq!(outbox.push_text("c".into()), Err(PushError::Full));
        assert_eq!(outbox.close_cause(), Some(CloseCause::Server(CloseCode::SlowConsumer)));
        assert_eq!(outbox.push_text("d".into()), Err(PushError::Closed));
    }

    #[test]
    fn full_by_bytes_closes_as_slow_consumer() {
        let (outbox, _body) = test_outbox(100, 10);
        assert_eq!(outbox.push_text("123456".into()), Ok(()));
        assert_eq!(outbox.push_text("123456".into()), Err(PushError::Full));
        assert_eq!(outbox.queued_bytes(), 6);
    }

    #[test]
    fn an_oversized_message_passes_an_empty_queue() {
        let (outbox, _body) = test_outbox(100, 4);
        assert_eq!(outbox.push_text("larger than four".into()), Ok(()));
    }

    #[test]
    fn a_replay_fills_half_the_queue_and_never_closes_it() {
        let (outbox, _body) = test_outbox(100, 100);
        assert_eq!(outbox.push_replay("x".repeat(30).into()), Ok(()));
        let refused = outbox.push_replay("y".repeat(30).into());
        assert_eq!(refused, Err(NotQueued::NoRoom("y".repeat(30).into())), "past half the bytes");
        assert_eq!(outbox.close_cause(), None);
        assert_eq!(outbox.push_text("z".repeat(60).into()), Ok(()), "the other half stays for live frames");
        let (outbox, _body) = test_outbox(4, 1 << 20);
        assert_eq!(outbox.push_replay("a".into()), Ok(()));
        assert_eq!(outbox.push_replay("b".into()), Ok(()));
        assert!(matches!(outbox.push_replay("c".into()), Err(NotQueued::NoRoom(_))), "past half the messages");
    }

    #[test]
    fn an_oversized_replay_frame_passes_an_empty_queue() {
        let (outbox, _body) = test_outbox(100, 10);
        assert_eq!(outbox.push_replay("larger than ten bytes".into()), Ok(()));
    }

    #[tokio::test]
    async fn replay_room_waits_for_the_client_to_read() {
        let (outbox, body) = test_outbox(100, 100);
        outbox.push_replay("x".repeat(40).into()).unwrap();
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.replay_room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the queue is over a quarter full");
        let mut body = Box::pin(body);
        let chunk = std::future::poll_fn(|cx| actix_web::body::MessageBody::poll_next(body.as_mut(), cx)).await;
        assert!(chunk.is_some(), "the client read the frame");
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken once read").unwrap();
    }

    #[test]
    fn first_close_reason_wins() {
        let (outbox, _body) = test_outbox(1, 1);
        outbox.close(CloseCode::ServiceRestart);
        outbox.close(CloseCode::SlowConsumer);
        assert_eq!(outbox.close_cause(), Some(CloseCause::Server(CloseCode::ServiceRestart)));
    }
}
