//! A connection's bounded outbound queue, and the writer task that drains it into the socket.
//!
//! The [`Outbox`] is the only way anything reaches a client: the session's own replies, the
//! hub's fan-out, the dispatcher's confirmations. It is bounded twice, in messages
//! (OUTBOUND_QUEUE_MESSAGES, the channel's capacity) and in bytes (OUTBOUND_QUEUE_BYTES, an
//! atomic counter). **When it is full the client is not reading fast enough: the push fails and
//! the connection is closed with 3008 (slow consumer).** Nobody waits on a slow client, so one
//! can neither grow the server's memory nor hold up a fan-out to others.
//!
//! Closing is a separate signal ([`CloseSignal`]) so it overtakes a full queue. A drain close
//! (1012) first flushes what is queued; a slow-consumer close does not (the client is not
//! reading anyway).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use actix_ws::Session as WsSink;
use bytestring::ByteString;
use tokio::sync::{mpsc, Notify};

use crate::protocol::CloseCode;

/// How long the writer may spend sending the close frame (and, for a drain, the queued
/// messages before it) before it gives up on the peer.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Items the writer takes off the queue per wake-up.
const WRITE_BATCH: usize = 64;

/// One item for the socket.
#[derive(Debug)]
pub enum Outbound {
    Text(ByteString),
    Ping,
    Pong(actix_web::web::Bytes),
}

/// Why a push did not queue.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue was over its limit; the connection is now closing as a slow consumer.
    Full,
    /// The connection is already closing.
    Closed,
}

/// The push side of a connection's outbound queue. Cheap to clone; every clone pushes into the
/// same queue.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    close: Arc<CloseSignal>,
}

/// Set once with the reason the connection closes; wakes the writer.
#[derive(Default)]
pub struct CloseSignal {
    code: OnceLock<CloseCode>,
    notify: Notify,
}

impl CloseSignal {
    /// Asks for the connection to close. Only the first reason counts; returns whether this was it.
    fn request(&self, code: CloseCode) -> bool {
        let first = self.code.set(code).is_ok();
        if first {
            // notify_one keeps a permit if the writer is busy sending, so the request is not missed.
            self.notify.notify_one();
        }
        first
    }

    pub fn requested(&self) -> Option<CloseCode> {
        self.code.get().copied()
    }
}

impl Outbox {
    /// A new queue; the receiver goes to [`run_writer`].
    pub fn new(max_messages: usize, max_bytes: usize) -> (Self, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(max_messages);
        let outbox = Outbox {
            tx,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes,
            close: Arc::new(CloseSignal::default()),
        };
        (outbox, rx)
    }

    /// Queues a text frame, or closes the connection as a slow consumer when the queue is full.
    pub fn push_text(&self, text: ByteString) -> Result<(), PushError> {
        if self.close.requested().is_some() {
            return Err(PushError::Closed);
        }
        let len = text.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        // One message larger than the whole byte budget still goes through an empty queue.
        if before > 0 && before + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(self.overflow());
        }
        match self.tx.try_send(Outbound::Text(text)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                Err(self.overflow())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                Err(PushError::Closed)
            }
        }
    }

    /// Queues a control frame. A full queue means the peer is not reading; the close that
    /// follows is more useful than the ping.
    pub fn push_control(&self, control: Outbound) -> Result<(), PushError> {
        match self.tx.try_send(control) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.overflow()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PushError::Closed),
        }
    }

    fn overflow(&self) -> PushError {
        self.close.request(CloseCode::SlowConsumer);
        PushError::Full
    }

    /// Asks the writer to close the connection with `code`. Idempotent: the first reason wins.
    pub fn close(&self, code: CloseCode) {
        self.close.request(code);
    }

    /// The reason the connection is closing, once one was given.
    pub fn close_requested(&self) -> Option<CloseCode> {
        self.close.requested()
    }

    /// Bytes waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }
}

/// Drains the queue into the socket until the connection closes; returns the close code it
/// sent (None when the socket went away first). Runs as its own task beside the session actor,
/// so a socket write never blocks the actor's message handling.
pub async fn run_writer(mut sink: WsSink, outbox: Outbox, mut rx: mpsc::Receiver<Outbound>) -> Option<CloseCode> {
    // One waiter for the whole life of the writer: a fresh `notified()` per item would register
    // and unregister with the Notify (a lock) for every frame.
    let close_requested = outbox.close.notify.notified();
    tokio::pin!(close_requested);
    let mut batch = Vec::new();
    'serve: loop {
        let received = tokio::select! {
            biased;
            () = &mut close_requested => break,
            received = rx.recv_many(&mut batch, WRITE_BATCH) => received,
        };
        if received == 0 {
            break;
        }
        // Everything queued goes to the socket before the next wake-up, so the HTTP layer
        // writes it in as few syscalls as its buffer allows.
        for item in batch.drain(..) {
            let sent = tokio::select! {
                biased;
                () = &mut close_requested => break 'serve,
                sent = send(&mut sink, &outbox, item) => sent,
            };
            if !sent {
                return None;
            }
        }
    }
    let code = outbox.close.requested().unwrap_or(CloseCode::Normal);
    let farewell = async {
        if code == CloseCode::ServiceRestart {
            while let Ok(item) = rx.try_recv() {
                if !send(&mut sink, &outbox, item).await {
                    return;
                }
            }
        }
        // The peer may be gone already; nothing more to do then.
        let _ = sink.close(Some(code.to_close_reason())).await;
    };
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, farewell).await;
    Some(code)
}

/// Sends one item; false when the socket is closed.
async fn send(sink: &mut WsSink, outbox: &Outbox, item: Outbound) -> bool {
    match item {
        Outbound::Text(text) => {
            outbox.queued_bytes.fetch_sub(text.len(), Ordering::Relaxed);
            sink.text(text).await.is_ok()
        }
        Outbound::Ping => sink.ping(b"").await.is_ok(),
        Outbound::Pong(payload) => sink.pong(&payload).await.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_by_count_closes_as_slow_consumer() {
        let (outbox, _rx) = Outbox::new(2, 1 << 20);
        assert_eq!(outbox.push_text("a".into()), Ok(()));
        assert_eq!(outbox.push_text("b".into()), Ok(()));
        assert_eq!(outbox.push_text("c".into()), Err(PushError::Full));
        assert_eq!(outbox.close_requested(), Some(CloseCode::SlowConsumer));
        assert_eq!(outbox.push_text("d".into()), Err(PushError::Closed));
    }

    #[test]
    fn full_by_bytes_closes_as_slow_consumer() {
        let (outbox, _rx) = Outbox::new(100, 10);
        assert_eq!(outbox.push_text("123456".into()), Ok(()));
        assert_eq!(outbox.push_text("123456".into()), Err(PushError::Full));
        assert_eq!(outbox.queued_bytes(), 6);
    }

    #[test]
    fn an_oversized_message_passes_an_empty_queue() {
        let (outbox, _rx) = Outbox::new(100, 4);
        assert_eq!(outbox.push_text("larger than four".into()), Ok(()));
    }

    #[test]
    fn first_close_reason_wins() {
        let (outbox, _rx) = Outbox::new(1, 1);
        outbox.close(CloseCode::ServiceRestart);
        outbox.close(CloseCode::SlowConsumer);
        assert_eq!(outbox.close_requested(), Some(CloseCode::ServiceRestart));
    }
}
