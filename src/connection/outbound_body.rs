//! The upgrade response's body: a connection's outbound queue ([`super::outbox`]) written into
//! the socket, ending with the close frame.
//!
//! The HTTP connection task polls [`OutboundBody`] directly, and each poll encodes everything
//! queued into one chunk, so a frame goes from the pusher to the socket with one wake-up and,
//! under load, many frames share one write. (actix-ws put a task and a second channel between
//! the two; see docs/architecture.md.)
//!
//! With a write delay (WRITE_DELAY_MS) the body holds an encoded chunk until its first frame has
//! waited that long, so frames arriving meanwhile share its write: fewer `sendto` calls per
//! delivery for busy clients, at the price of that much latency. Only a chunk that caught up with
//! the queue is held (a backlog is written at once), and a held chunk is bounded
//! (`MAX_HELD_CHUNK_BYTES`, 64 KiB): once that large it is written at once.
//!
//! A close asked for on the connection's [`CloseSignal`](super::state::CloseSignal) wakes the
//! body, which sends the close frame next, ahead of a full queue. A drain close (1012) and the
//! token and limit closes (3005, 3500, 3502, 3504, 3509) first flush what is queued, so the
//! client reads the reply that explains them; any other close does not (a slow client is not
//! reading anyway). The session hears how the body ended through `done`.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{ready, Context, Poll},
    time::Duration,
};

use actix_http::ws::{self, Codec};
use actix_web::{
    body::{BodySize, MessageBody},
    web::{Bytes, BytesMut},
};
use futures_util::FutureExt;
use tokio::sync::oneshot;
use tokio_util::{codec::Encoder, sync::WaitForCancellationFutureOwned};

use super::{
    outbox::{Outbound, Shared},
    state::CloseCause,
};
use crate::protocol::CloseCode;

/// Items encoded per poll of the body: bounds one chunk (the HTTP layer stops polling once its
/// write buffer is full anyway).
const WRITE_BATCH: usize = 64;

/// Bytes a chunk held for the write delay may reach before it is written anyway; frames taken off
/// the queue no longer count against OUTBOUND_QUEUE_BYTES, so this bounds them instead.
const MAX_HELD_CHUNK_BYTES: usize = 64 * 1024;

/// The longest payload a control frame may carry (RFC 6455 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

pin_project_lite::pin_project! {
    /// The WebSocket upgrade response's body: the frames of one connection, encoded as they are
    /// queued, ending with the close frame.
    ///
    /// `close_asked` is registered whenever the body waits, so a close wakes it. It is kept inside
    /// the body (which the HTTP layer boxes anyway) rather than in an allocation of its own.
    pub struct OutboundBody {
        #[pin]
        close_asked: WaitForCancellationFutureOwned,
        writer: Writer,
    }
}

/// Everything of the body but its close wake-up: the queue's receiving end, and the chunk being
/// encoded from it.
struct Writer {
    /// The queue's taking end is here: `shared.queue`.
    shared: Arc<Shared>,
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
    /// Told the close code once the close frame is handed over; told None if the body is dropped
    /// first (the connection went away). The session waits on it to end.
    done: Option<oneshot::Sender<Option<CloseCode>>>,
}

impl OutboundBody {
    pub(super) fn new(shared: Arc<Shared>, write_delay: Duration, done: oneshot::Sender<Option<CloseCode>>) -> Self {
        OutboundBody {
            close_asked: shared.close.asked(),
            writer: Writer {
                shared,
                codec: Codec::new(),
                chunk: BytesMut::new(),
                write_delay,
                delay: None,
                holding: false,
                finished: false,
                done: Some(done),
            },
        }
    }
}

impl Writer {
    fn encode(&mut self, item: Outbound, chunk: &mut BytesMut) {
        let message = match item {
            Outbound::Text(text) => {
                self.shared.queued_bytes.fetch_sub(text.len(), Ordering::Relaxed);
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

    /// Everything still queued when the close explains itself (a drain, a token or limit close),
    /// then the close frame of the close asked for.
    fn farewell(&mut self, chunk: &mut BytesMut) {
        // A cause is always set before anyone is woken for it; 1000 is only the type's fallback.
        let code = self.shared.close.cause().map_or(CloseCode::Normal, CloseCause::frame_code);
        if code.flushes_queue() {
            while let Some(item) = self.shared.queue.take() {
                self.encode(item, chunk);
            }
        }
        self.encode_message(ws::Message::Close(Some(code.to_close_reason())), chunk);
        self.shared.queue.close();
        self.finished = true;
        if let Some(done) = self.done.take() {
            let _ = done.send(Some(code));
        }
    }

    /// The next chunk of queued frames, or Pending when there is none to write yet (the queue is
    /// empty, or the chunk waits out the write delay).
    fn poll_frames(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Infallible>>> {
        let mut chunk = std::mem::take(&mut self.chunk);
        // Set when the queue is open and empty: only then may more frames come to share a write.
        let mut caught_up = false;
        let mut took = false;
        for _ in 0..WRITE_BATCH {
            match self.shared.queue.poll_take(cx) {
                Poll::Ready(Some(item)) => {
                    self.encode(item, &mut chunk);
                    took = true;
                }
                Poll::Ready(None) => {
                    if chunk.is_empty() {
                        // Every pusher is gone (the session stopped): end the conversation properly.
                        self.shared.close.ask(CloseCause::Server(CloseCode::Normal));
                        self.farewell(&mut chunk);
                    }
                    break;
                }
                Poll::Pending => {
                    caught_up = true;
                    break;
                }
            }
        }
        if took {
            // Room in the queue: a resume's replay waiting for it goes on.
            self.shared.taken();
        }
        // A chunk waits out the write delay only when it caught up with an open queue and is not
        // yet as large as a held chunk may grow. A backlog goes at once (it shares writes
        // already, and holding each batch of it would cap the client's rate), and so does the
        // last chunk of a connection.
        let write_now = !caught_up || chunk.len() >= MAX_HELD_CHUNK_BYTES;
        let ready = if chunk.is_empty() || (!write_now && self.hold_for_delay(cx)) {
            Poll::Pending
        } else {
            self.holding = false;
            Poll::Ready(Some(Ok(chunk.split().freeze())))
        };
        // The connection copies each chunk and drops it, so by the next poll the allocation is
        // ours alone again and is reused: no allocation per write.
        self.chunk = chunk;
        ready
    }
}

impl MessageBody for OutboundBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let writer = this.writer;
        if writer.finished {
            return Poll::Ready(None);
        }
        if writer.shared.close.cause().is_none() {
            let frames = writer.poll_frames(cx);
            if frames.is_ready() {
                return frames;
            }
            // About to wait, so a close must wake this task. Only a poll that waits needs that: a
            // poll that hands over a chunk is followed by another once the chunk is written.
            ready!(this.close_asked.poll(cx));
        }
        let mut chunk = std::mem::take(&mut writer.chunk);
        writer.farewell(&mut chunk);
        Poll::Ready(Some(Ok(chunk.freeze())))
    }
}

impl Drop for Writer {
    /// The connection went away before the close frame was handed over.
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(None);
        }
    }
}

/// What a client reads from a connection's body, for the tests here and of the hub.
#[cfg(test)]
pub(crate) mod client_view {
    use tokio_util::codec::Decoder;

    use super::*;

    /// What a client reads: the body's bytes decoded as frames, up to its end.
    pub(crate) async fn frames_read(body: impl MessageBody<Error = Infallible>) -> Vec<ws::Frame> {
        decode(&actix_web::body::to_bytes(body).await.unwrap_or_else(|never| match never {}))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Vec<ws::Frame> {
        let mut bytes = BytesMut::from(bytes);
        let mut codec = client_codec();
        std::iter::from_fn(|| codec.decode(&mut bytes).expect("valid frames")).collect()
    }

    fn client_codec() -> Codec {
        Codec::new().client_mode().max_size(1 << 20)
    }

    /// Reads a body's frames as they are written, while its connection stays open.
    pub(crate) struct FrameReader {
        body: Pin<Box<OutboundBody>>,
        unread: BytesMut,
        codec: Codec,
    }

    impl FrameReader {
        pub(crate) fn new(body: OutboundBody) -> Self {
            FrameReader { body: Box::pin(body), unread: BytesMut::new(), codec: client_codec() }
        }

        /// The next `count` frames, or fewer: those written within `wait`, or before the body
        /// ended.
        pub(crate) async fn next_frames(&mut self, count: usize, wait: Duration) -> Vec<ws::Frame> {
            let mut frames = Vec::new();
            let reading = async {
                while frames.len() < count {
                    if let Some(frame) = self.codec.decode(&mut self.unread).expect("valid frames") {
                        frames.push(frame);
                        continue;
                    }
                    let body = &mut self.body;
                    match std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
                        Some(chunk) => self.unread.extend_from_slice(&chunk.unwrap_or_else(|never| match never {})),
                        None => break,
                    }
                }
            };
            // Fewer frames than asked for is the caller's finding, not a failure here.
            let _ = tokio::time::timeout(wait, reading).await;
            frames
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        client_view::{decode, frames_read},
        *,
    };
    use crate::connection::outbox::{Outbox, OutboxLimits, PushError};

    fn limits(max_messages: usize, max_bytes: usize) -> OutboxLimits {
        OutboxLimits { max_messages, max_bytes, write_delay: Duration::ZERO }
    }

    fn test_outbox(max_messages: usize, max_bytes: usize) -> (Outbox, OutboundBody) {
        Outbox::new(limits(max_messages, max_bytes), oneshot::channel().0)
    }

    /// The body's next chunk, as the HTTP connection would poll for it.
    async fn next_chunk(body: &mut Pin<Box<OutboundBody>>) -> Bytes {
        let chunk = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_next(cx)).await;
        chunk.expect("a chunk").unwrap_or_else(|never| match never {})
    }

    /// A queue with a write delay, and its body pinned where the HTTP layer would pin it.
    fn delayed(write_delay: Duration) -> (Outbox, Pin<Box<OutboundBody>>) {
        let (outbox, body) =
            Outbox::new(OutboxLimits { write_delay, ..limits(2 * WRITE_BATCH, 1 << 20) }, oneshot::channel().0);
        (outbox, Box::pin(body))
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

    /// A waker that remembers being woken, for a poll made by hand.
    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicBool);

    impl futures_util::task::ArcWake for Woken {
        fn wake_by_ref(woken: &Arc<Self>) {
            woken.0.store(true, Ordering::SeqCst);
        }
    }

    /// Polls the body once by hand: whether it waits, and what wakes it then.
    fn poll_waiting(body: &mut Pin<Box<OutboundBody>>) -> Arc<Woken> {
        let woken = Arc::new(Woken::default());
        let waker = futures_util::task::waker(woken.clone());
        assert!(body.as_mut().poll_next(&mut Context::from_waker(&waker)).is_pending(), "the body waits");
        woken
    }

    #[tokio::test]
    async fn a_close_wakes_a_body_waiting_for_frames() {
        let (outbox, mut body) = delayed(Duration::ZERO);
        outbox.push_text("one".into()).unwrap();
        assert_eq!(decode(&next_chunk(&mut body).await), vec![text_frame("one")]);
        let woken = poll_waiting(&mut body);
        outbox.close(CloseCode::HeartbeatTimeout);
        assert!(woken.0.load(Ordering::SeqCst), "the close woke the body");
        assert_eq!(decode(&next_chunk(&mut body).await), vec![close_frame(CloseCode::HeartbeatTimeout)]);
    }

    #[tokio::test]
    async fn a_close_wakes_a_chunk_held_for_the_write_delay() {
        let (outbox, mut body) = delayed(Duration::from_secs(600));
        outbox.push_text("held".into()).unwrap();
        let woken = poll_waiting(&mut body);
        outbox.close(CloseCode::TokenExpired);
        assert!(woken.0.load(Ordering::SeqCst), "the close woke the body");
        assert_eq!(
            decode(&next_chunk(&mut body).await),
            vec![text_frame("held"), close_frame(CloseCode::TokenExpired)]
        );
    }

    #[test]
    fn a_body_dropped_before_its_close_reports_the_connection_lost() {
        let (done_tx, mut done) = oneshot::channel();
        let (_outbox, body) = Outbox::new(limits(10, 1 << 20), done_tx);
        drop(body);
        assert_eq!(done.try_recv(), Ok(None));
    }
}
