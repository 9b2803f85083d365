//! A connection's bounded outbound queue, and the response body that drains it into the socket.
//!
//! The [`Outbox`] is the only way anything reaches a client: the session's own replies, the
//! hub's fan-out, the dispatcher's confirmations. It is bounded twice, in messages
//! (OUTBOUND_QUEUE_MESSAGES, the channel's capacity) and in bytes (OUTBOUND_QUEUE_BYTES, an
//! atomic counter). **When it is full the client is not reading fast enough: the push fails and
//! the connection is closed with 3008 (slow consumer).** Nobody waits on a slow client, so one
//! can neither grow the server's memory nor hold up a fan-out to others.
//!
//! The receiving end is [`OutboundBody`], the upgrade response's body: the HTTP connection task
//! polls it directly, and each poll encodes everything queued into one chunk, so a frame goes
//! from the pusher to the socket with one wake-up and, under load, many frames share one write.
//! (actix-ws put a task and a second channel between the two; see docs/architecture.md.)
//!
//! With a write delay (WRITE_DELAY_MS) the body holds an encoded chunk until its first frame has
//! waited that long, so frames arriving meanwhile share its write: fewer `sendto` calls per
//! delivery for busy clients, at the price of that much latency. Only a chunk that caught up with
//! the queue is held (a backlog is written at once), and a held chunk is bounded
//! ([`MAX_HELD_CHUNK_BYTES`]): once that large it is written at once.
//!
//! Closing is a separate signal ([`CloseSignal`]) so it overtakes a full queue. A drain close
//! (1012) and the token closes (3005, 3500, 3502) first flush what is queued, so the client
//! reads the reply that explains them; any other close does not (a slow client is not reading
//! anyway).

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    task::{Context, Poll},
    time::Duration,
};

use actix_http::ws::{self, Codec};
use actix_web::{
    body::{BodySize, MessageBody},
    web::{Bytes, BytesMut},
};
use bytestring::ByteString;
use futures_util::{task::AtomicWaker, FutureExt};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::codec::Encoder;

use crate::protocol::CloseCode;

/// Items encoded per poll of the body: bounds one chunk (the HTTP layer stops polling once its
/// write buffer is full anyway).
const WRITE_BATCH: usize = 64;

/// Bytes a chunk held for the write delay may reach before it is written anyway; frames taken off
/// the queue no longer count against OUTBOUND_QUEUE_BYTES, so this bounds them instead.
const MAX_HELD_CHUNK_BYTES: usize = 64 * 1024;

/// The longest payload a control frame may carry (RFC 6455 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

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

/// The push side of a connection's outbound queue. Cheap to clone; every clone pushes into the
/// same queue.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Outbound>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    close: Arc<CloseSignal>,
}

/// Set once with the reason the connection closes. Wakes the body (to send the close frame) and
/// whoever waits in [`CloseSignal::wait`] (the session, which gives the body a deadline).
#[derive(Default)]
pub(crate) struct CloseSignal {
    code: OnceLock<CloseCode>,
    body: AtomicWaker,
    waiters: Notify,
}

impl CloseSignal {
    /// Asks for the connection to close. Only the first reason counts; returns whether this was it.
    fn request(&self, code: CloseCode) -> bool {
        let first = self.code.set(code).is_ok();
        if first {
            self.body.wake();
            // notify_one keeps a permit if nobody waits yet, so the request is not missed.
            self.waiters.notify_one();
        }
        first
    }

    pub(crate) fn requested(&self) -> Option<CloseCode> {
        self.code.get().copied()
    }

    /// Resolves once a close has been requested.
    pub(crate) async fn wait(&self) -> CloseCode {
        loop {
            if let Some(code) = self.requested() {
                return code;
            }
            self.waiters.notified().await;
        }
    }
}

impl Outbox {
    /// A new queue and the response body that drains it. `done` hears how the body ended: the
    /// close code it sent, or None when the connection went away first.
    pub(crate) fn new(limits: OutboxLimits, done: oneshot::Sender<Option<CloseCode>>) -> (Self, OutboundBody) {
        let (tx, rx) = mpsc::channel(limits.max_messages);
        let outbox = Outbox {
            tx,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes: limits.max_bytes,
            close: Arc::new(CloseSignal::default()),
        };
        let body = OutboundBody {
            rx,
            queued_bytes: outbox.queued_bytes.clone(),
            close: outbox.close.clone(),
            codec: Codec::new(),
            chunk: BytesMut::new(),
            write_delay: limits.write_delay,
            delay: None,
            holding: false,
            finished: false,
            done: Some(done),
        };
        (outbox, body)
    }

    /// Queues a text frame, or closes the connection as a slow consumer when the queue is full.
    pub(crate) fn push_text(&self, text: ByteString) -> Result<(), PushError> {
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
    pub(crate) fn push_control(&self, control: Outbound) -> Result<(), PushError> {
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

    /// Asks the body to close the connection with `code`. Idempotent: the first reason wins.
    pub(crate) fn close(&self, code: CloseCode) {
        self.close.request(code);
    }

    /// The reason the connection is closing, once one was given.
    pub(crate) fn close_requested(&self) -> Option<CloseCode> {
        self.close.requested()
    }

    /// The close signal, to wait on.
    pub(crate) fn close_signal(&self) -> Arc<CloseSignal> {
        self.close.clone()
    }

    /// Bytes waiting in the queue.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }
}

/// The WebSocket upgrade response's body: the frames of one connection, encoded as they are
/// queued, ending with the close frame.
pub(crate) struct OutboundBody {
    rx: mpsc::Receiver<Outbound>,
    queued_bytes: Arc<AtomicUsize>,
    close: Arc<CloseSignal>,
    codec: Codec,
    /// Where frames are encoded; split off as each chunk is handed over.
    chunk: BytesMut,
    /// WRITE_DELAY_MS; zero writes every chunk at once.
    write_delay: Duration,
    /// The write delay's timer, made the first time a chunk is held.
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
    /// `chunk` is being held and `delay` is armed for it.
    holding: bool,
    /// The close frame has been handed to the connection.
    finished: bool,
    done: Option<oneshot::Sender<Option<CloseCode>>>,
}

impl OutboundBody {
    fn encode(&mut self, item: Outbound, chunk: &mut BytesMut) {
        let message = match item {
            Outbound::Text(text) => {
                self.queued_bytes.fetch_sub(text.len(), Ordering::Relaxed);
                ws::Message::Text(text)
            }
            Outbound::Ping => ws::Message::Ping(Bytes::new()),
            Outbound::Pong(mut payload) => {
                payload.truncate(MAX_CONTROL_PAYLOAD);
                ws::Message::Pong(payload)
            }
        };
        self.encode_message(message, chunk);
    }

    fn encode_message(&mut self, message: ws::Message, chunk: &mut BytesMut) {
        // The server-side codec only fails on what it never gets here (a continuation out of order).
        if let Err(error) = self.codec.encode(message, chunk) {
            log::error!(error:% = error; "could not encode an outbound frame");
        }
    }

    /// Whether the chunk should wait for more frames: the write delay is on and has not run out
    /// since the chunk's first frame. Registers the timer's wake-up when it says yes.
    fn hold_for_delay(&mut self, cx: &mut Context<'_>) -> bool {
        if self.write_delay.is_zero() {
            return false;
        }
        let write_delay = self.write_delay;
        let timer = self.delay.get_or_insert_with(|| Box::pin(tokio::time::sleep(write_delay)));
        if !self.holding {
            timer.as_mut().reset(tokio::time::Instant::now() + write_delay);
            self.holding = true;
        }
        self.holding = timer.poll_unpin(cx).is_pending();
        self.holding
    }

    /// Everything still queued (for a drain), then the close frame.
    fn farewell(&mut self, code: CloseCode, chunk: &mut BytesMut) {
        if code.flushes_queue() {
            while let Ok(item) = self.rx.try_recv() {
                self.encode(item, chunk);
            }
        }
        self.encode_message(ws::Message::Close(Some(code.to_close_reason())), chunk);
        self.rx.close();
        self.finished = true;
        if let Some(done) = self.done.take() {
            let _ = done.send(Some(code));
        }
    }
}

impl MessageBody for OutboundBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        this.close.body.register(cx.waker());
        let mut chunk = std::mem::take(&mut this.chunk);
        if let Some(code) = this.close.requested() {
            this.farewell(code, &mut chunk);
            return Poll::Ready(Some(Ok(chunk.freeze())));
        }
        // Set when the queue is open and empty: only then may more frames come to share a write.
        let mut caught_up = false;
        for _ in 0..WRITE_BATCH {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(item)) => this.encode(item, &mut chunk),
                Poll::Ready(None) => {
                    if chunk.is_empty() {
                        // Every pusher is gone (the session stopped): end the conversation properly.
                        this.farewell(CloseCode::Normal, &mut chunk);
                    }
                    break;
                }
                Poll::Pending => {
                    caught_up = true;
                    break;
                }
            }
        }
        // A chunk waits out the write delay only when it caught up with an open queue and is not
        // yet as large as a held chunk may grow. A backlog goes at once (it shares writes
        // already, and holding each batch of it would cap the client's rate), and so does the
        // last chunk of a connection.
        let write_now = !caught_up || chunk.len() >= MAX_HELD_CHUNK_BYTES;
        let ready = if chunk.is_empty() || (!write_now && this.hold_for_delay(cx)) {
            Poll::Pending
        } else {
            this.holding = false;
            Poll::Ready(Some(Ok(chunk.split().freeze())))
        };
        // The connection copies each chunk and drops it, so by the next poll the allocation is
        // ours alone again and is reused: no allocation per write.
        this.chunk = chunk;
        ready
    }
}

impl Drop for OutboundBody {
    /// The connection went away before the close frame was handed over.
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_messages: usize, max_bytes: usize) -> OutboxLimits {
        OutboxLimits { max_messages, max_bytes, write_delay: Duration::ZERO }
    }

    fn test_outbox(max_messages: usize, max_bytes: usize) -> (Outbox, OutboundBody) {
        Outbox::new(limits(max_messages, max_bytes), oneshot::channel().0)
    }

    /// What a client reads: the body's bytes decoded as frames.
    async fn frames_read(body: OutboundBody) -> Vec<ws::Frame> {
        decode(&actix_web::body::to_bytes(body).await.unwrap_or_else(|never| match never {}))
    }

    fn decode(bytes: &[u8]) -> Vec<ws::Frame> {
        use tokio_util::codec::Decoder;
        let mut bytes = BytesMut::from(bytes);
        let mut codec = Codec::new().client_mode().max_size(1 << 20);
        std::iter::from_fn(|| codec.decode(&mut bytes).expect("valid frames")).collect()
    }

    /// The body's next chunk, as the HTTP connection would poll for it.
    async fn next_chunk(body: &mut OutboundBody) -> Bytes {
        let chunk = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_next(cx)).await;
        chunk.expect("a chunk").unwrap_or_else(|never| match never {})
    }

    fn delayed(write_delay: Duration) -> (Outbox, OutboundBody) {
        Outbox::new(OutboxLimits { write_delay, ..limits(2 * WRITE_BATCH, 1 << 20) }, oneshot::channel().0)
    }

    #[tokio::test]
    async fn with_a_write_delay_frames_queued_meanwhile_share_one_write() {
        let delay = Duration::from_millis(200);
        let (outbox, mut body) = delayed(delay);
        let started = tokio::time::Instant::now();
        outbox.push_text("one".into()).unwrap();
        let first_poll = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_next(cx).is_pending())).await;
        assert!(first_poll, "the first frame waits for the delay");
        outbox.push_text("two".into()).unwrap();
        let chunk = next_chunk(&mut body).await;
        assert!(started.elapsed() >= delay);
        assert_eq!(decode(&chunk), vec![text_frame("one"), text_frame("two")]);
        // The next frame waits a whole delay of its own.
        outbox.push_text("three".into()).unwrap();
        let again = tokio::time::Instant::now();
        assert_eq!(decode(&next_chunk(&mut body).await), vec![text_frame("three")]);
        assert!(again.elapsed() >= delay);
    }

    #[tokio::test]
    async fn with_a_write_delay_a_backlog_is_written_without_waiting() {
        let (outbox, mut body) = delayed(Duration::from_secs(600));
        for seq in 0..=WRITE_BATCH {
            outbox.push_text(seq.to_string().into()).unwrap();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), next_chunk(&mut body)).await.expect("written at once");
        assert_eq!(decode(&chunk).len(), WRITE_BATCH);
    }

    #[tokio::test]
    async fn with_a_write_delay_the_close_after_the_last_pusher_is_not_held() {
        let (outbox, body) = delayed(Duration::from_secs(600));
        outbox.push_text("last words".into()).unwrap();
        drop(outbox);
        let frames = tokio::time::timeout(Duration::from_secs(5), frames_read(body)).await.expect("not held");
        assert_eq!(frames, vec![text_frame("last words"), close_frame(CloseCode::Normal)]);
    }

    #[tokio::test]
    async fn a_held_chunk_that_grew_large_is_written_at_once() {
        let (outbox, mut body) = delayed(Duration::from_secs(600));
        let large = "x".repeat(MAX_HELD_CHUNK_BYTES);
        outbox.push_text(large.clone().into()).unwrap();
        let chunk = tokio::time::timeout(Duration::from_secs(5), next_chunk(&mut body)).await.expect("written at once");
        assert_eq!(decode(&chunk), vec![text_frame(&large)]);
    }

    fn text_frame(text: &str) -> ws::Frame {
        ws::Frame::Text(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// A close frame as the client decodes it (the codec names the codes it knows).
    fn close_frame(code: CloseCode) -> ws::Frame {
        let mut reason = code.to_close_reason();
        reason.code = code.code().into();
        ws::Frame::Close(Some(reason))
    }

    #[tokio::test]
    async fn a_drain_sends_what_is_queued_then_1012() {
        let (done_tx, done) = oneshot::channel();
        let (outbox, body) = Outbox::new(limits(10, 1 << 20), done_tx);
        outbox.push_text("one".into()).unwrap();
        outbox.push_control(Outbound::Ping).unwrap();
        outbox.push_text("two".into()).unwrap();
        outbox.close(CloseCode::ServiceRestart);
        let expected = vec![
            text_frame("one"),
            ws::Frame::Ping(Bytes::new()),
            text_frame("two"),
            close_frame(CloseCode::ServiceRestart),
        ];
        assert_eq!(frames_read(body).await, expected);
        assert_eq!(done.await, Ok(Some(CloseCode::ServiceRestart)));
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_slow_consumer_gets_only_the_close() {
        let (outbox, body) = test_outbox(1, 1 << 20);
        outbox.push_text("queued".into()).unwrap();
        assert_eq!(outbox.push_text("over".into()), Err(PushError::Full));
        assert_eq!(frames_read(body).await, vec![close_frame(CloseCode::SlowConsumer)]);
    }

    #[tokio::test]
    async fn when_every_pusher_is_gone_the_body_closes_normally() {
        let (done_tx, done) = oneshot::channel();
        let (outbox, body) = Outbox::new(limits(10, 1 << 20), done_tx);
        outbox.push_text("last words".into()).unwrap();
        drop(outbox);
        assert_eq!(frames_read(body).await, vec![text_frame("last words"), close_frame(CloseCode::Normal)]);
        assert_eq!(done.await, Ok(Some(CloseCode::Normal)));
    }

    #[test]
    fn a_body_dropped_before_its_close_reports_the_connection_lost() {
        let (done_tx, mut done) = oneshot::channel();
        let (_outbox, body) = Outbox::new(limits(10, 1 << 20), done_tx);
        drop(body);
        assert_eq!(done.try_recv(), Ok(None));
    }

    #[test]
    fn full_by_count_closes_as_slow_consumer() {
        let (outbox, _body) = test_outbox(2, 1 << 20);
        assert_eq!(outbox.push_text("a".into()), Ok(()));
        assert_eq!(outbox.push_text("b".into()), Ok(()));
        assert_eq!(outbox.push_text("c".into()), Err(PushError::Full));
        assert_eq!(outbox.close_requested(), Some(CloseCode::SlowConsumer));
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
    fn first_close_reason_wins() {
        let (outbox, _body) = test_outbox(1, 1);
        outbox.close(CloseCode::ServiceRestart);
        outbox.close(CloseCode::SlowConsumer);
        assert_eq!(outbox.close_requested(), Some(CloseCode::ServiceRestart));
    }
}
