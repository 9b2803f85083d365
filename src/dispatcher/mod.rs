//! The queue-dispatcher actor: batches forwards per agent queue and sends them to SQS (or to the
//! local spool), confirming each forward only once its queue accepted it.
//!
//! - [`routing`]: `type` -> agent queue. [`message`]: the body and attributes of a queue
//!   message. [`sqs`]: one `SendMessageBatch` call. [`spool`]: the local stand-in for SQS.
//!
//! Each queue has a lane: forwards wait there in arrival order and leave in batches of up to 10
//! entries and SQS_MAX_BATCH_BYTES, as soon as a batch is full or the oldest entry has waited
//! SQS_BATCH_LINGER_MS. Standard queues may have [`MAX_IN_FLIGHT_STANDARD`] batches in flight;
//! FIFO queues and the spool one, which keeps their order. A failed entry is retried with
//! jittered exponential backoff when the fault is not the sender's, until its deadline
//! (FORWARD_DEADLINE_SECS); a sender fault or a passed deadline is answered with
//! `forward_failed` naming the message. Every forward is answered exactly once: confirmed, or
//! failed, never dropped.
//!
//! **Bounds.** The mailbox holds [`DISPATCHER_MAILBOX_CAPACITY`] messages; sessions `try_send`,
//! and a full mailbox answers the client `busy`. Forwards accepted but not yet answered are
//! capped at DISPATCHER_MAX_PENDING; past it the client gets `busy` too. So when SQS is slower
//! than the clients, clients are told, and memory stays flat.

pub(crate) mod message;
pub(crate) mod routing;
pub(crate) mod spool;
pub(crate) mod sqs;

use std::{collections::VecDeque, sync::Arc, time::Duration};

use actix::prelude::*;
use tokio::{sync::oneshot, time::Instant};

use self::{message::QueueMessage, routing::AgentRole, spool::Spool, sqs::SqsQueues};
use crate::{
    config::DispatcherSettings,
    metrics::Metrics,
    persistence::RecordSink,
    protocol::{ErrorCode, RequestError},
};

/// Messages the dispatcher's mailbox holds before sessions are told `busy`.
pub(crate) const DISPATCHER_MAILBOX_CAPACITY: usize = 4096;
/// Batches a standard queue may have in flight at once.
pub(crate) const MAX_IN_FLIGHT_STANDARD: usize = 8;
/// Entries in one SendMessageBatch call: SQS's limit.
pub(crate) const MAX_BATCH_ENTRIES: usize = 10;
const RETRY_BASE: Duration = Duration::from_millis(50);
const RETRY_CAP: Duration = Duration::from_secs(2);

/// Where forwards go.
pub(crate) enum QueueBackend {
    Sqs(SqsQueues),
    Spool(Spool),
}

impl QueueBackend {
    async fn send_batch(&self, role: AgentRole, messages: &[&QueueMessage]) -> Vec<EntryOutcome> {
        match self {
            QueueBackend::Sqs(queues) => queues.send_batch(role, messages).await,
            QueueBackend::Spool(spool) => spool.send_batch(role, messages).await,
        }
    }

    fn max_in_flight(&self, role: AgentRole) -> usize {
        match self {
            QueueBackend::Sqs(queues) if !queues.is_fifo(role) => MAX_IN_FLIGHT_STANDARD,
            QueueBackend::Sqs(_) | QueueBackend::Spool(_) => 1,
        }
    }

    /// For the start-up log.
    pub(crate) fn describe(&self) -> String {
        match self {
            QueueBackend::Sqs(queues) => format!(
                "SQS queues pm={} dev={} qa={} ops={}",
                queues.url(AgentRole::Pm),
                queues.url(AgentRole::Dev),
                queues.url(AgentRole::Qa),
                queues.url(AgentRole::Ops)
            ),
            QueueBackend::Spool(spool) => {
                format!("local spool in {} (at most {} bytes)", spool.dir().display(), spool.max_bytes())
            }
        }
    }
}

/// What became of one entry of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EntryOutcome {
    /// Accepted; the queue's message id.
    Sent(String),
    /// Not accepted, not the sender's fault: try again.
    Retry(String),
    /// Not accepted, and retrying will not help.
    Failed(String),
}

/// A confirmed forward.
#[derive(Clone, Debug)]
pub(crate) struct ForwardReceipt {
    pub sqs_message_id: String,
    pub queue: AgentRole,
}

pub(crate) type ForwardResult = Result<ForwardReceipt, RequestError>;

/// A forward from a session; answered on `reply`, exactly once.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Forward {
    pub message: QueueMessage,
    pub reply: oneshot::Sender<ForwardResult>,
}

/// Sends everything waiting now, without lingering; answers when no forward is unanswered.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Flush;

struct Pending {
    message: QueueMessage,
    reply: oneshot::Sender<ForwardResult>,
    size: usize,
    enqueued_at: Instant,
    deadline: Instant,
}

impl Pending {
    fn answer(self, result: ForwardResult) {
        // The session may be gone (client disconnected); the outcome is still counted and
        // audited by the caller.
        let _ = self.reply.send(result);
    }
}

#[derive(Default)]
struct Lane {
    waiting: VecDeque<Pending>,
    /// Batches being sent.
    in_flight: usize,
    /// Forwards in those batches.
    in_flight_entries: usize,
    timer_armed: bool,
}

pub(crate) struct QueueDispatcher {
    backend: Arc<QueueBackend>,
    lanes: [Lane; 4],
    settings: DispatcherSettings,
    /// Forwards accepted and not yet answered.
    unanswered: usize,
    /// Set by [`Flush`]: send without lingering from now on.
    flushing: bool,
    flush_waiters: Vec<oneshot::Sender<()>>,
    metrics: Arc<Metrics>,
    records: RecordSink,
}

impl QueueDispatcher {
    pub(crate) fn new(
        backend: QueueBackend,
        settings: DispatcherSettings,
        metrics: Arc<Metrics>,
        records: RecordSink,
    ) -> Self {
        QueueDispatcher {
            backend: Arc::new(backend),
            lanes: Default::default(),
            settings,
            unanswered: 0,
            flushing: false,
            flush_waiters: Vec::new(),
            metrics,
            records,
        }
    }

    /// Sends every batch that is ready and may go; arms the linger timer for the rest.
    fn pump(&mut self, role: AgentRole, ctx: &mut Context<Self>) {
        self.expire_waiting(role);
        let max_in_flight = self.backend.max_in_flight(role);
        loop {
            let lane = &mut self.lanes[role.index()];
            let Some(oldest) = lane.waiting.front() else { break };
            if lane.in_flight >= max_in_flight {
                break;
            }
            let waited = oldest.enqueued_at.elapsed();
            let full = lane.waiting.len() >= MAX_BATCH_ENTRIES
                || lane.waiting.iter().take(MAX_BATCH_ENTRIES).map(|p| p.size).sum::<usize>()
                    > self.settings.sqs_max_batch_bytes.get();
            if !(full || self.flushing || waited >= self.settings.sqs_batch_linger) {
                if !lane.timer_armed {
                    lane.timer_armed = true;
                    ctx.run_later(self.settings.sqs_batch_linger - waited, move |dispatcher, ctx| {
                        dispatcher.lanes[role.index()].timer_armed = false;
                        dispatcher.pump(role, ctx);
                    });
                }
                break;
            }
            let batch = take_batch(&mut lane.waiting, self.settings.sqs_max_batch_bytes.get());
            let size = batch.len();
            lane.in_flight += 1;
            lane.in_flight_entries += size;
            let delivery = deliver(self.backend.clone(), role, batch, self.metrics.clone(), self.records.clone());
            ctx.spawn(delivery.into_actor(self).map(move |(), dispatcher, ctx| {
                let lane = &mut dispatcher.lanes[role.index()];
                lane.in_flight -= 1;
                lane.in_flight_entries -= size;
                dispatcher.answered(size);
                dispatcher.pump(role, ctx);
            }));
        }
        let lane = &self.lanes[role.index()];
        let entries = &self.metrics.forward_queue_entries;
        entries.with_label_values(&[role.name(), "waiting"]).set(lane.waiting.len() as i64);
        entries.with_label_values(&[role.name(), "in_flight"]).set(lane.in_flight_entries as i64);
    }

    /// Answers waiting forwards whose deadline passed before they could be sent.
    fn expire_waiting(&mut self, role: AgentRole) {
        let now = Instant::now();
        let lane = &mut self.lanes[role.index()];
        let before = lane.waiting.len();
        let mut kept = VecDeque::with_capacity(before);
        for pending in lane.waiting.drain(..) {
            if pending.deadline <= now {
                self.metrics.forward_entries.with_label_values(&[role.name(), "failed"]).inc();
                let reason = format!(
                    "not accepted by the {role} queue within {} s: queue busy",
                    self.settings.forward_deadline.as_secs()
                );
                pending.answer(Err(RequestError::new(ErrorCode::ForwardFailed, reason)));
            } else {
                kept.push_back(pending);
            }
        }
        lane.waiting = kept;
        let expired = before - lane.waiting.len();
        if expired > 0 {
            self.answered(expired);
        }
    }

    fn answered(&mut self, count: usize) {
        self.unanswered -= count;
        self.metrics.forward_pending.set(self.unanswered as i64);
        if self.unanswered == 0 {
            for waiter in self.flush_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// Takes the next batch: up to 10 entries within the byte limit (at least one).
fn take_batch(waiting: &mut VecDeque<Pending>, max_bytes: usize) -> Vec<Pending> {
    let mut batch = Vec::with_capacity(MAX_BATCH_ENTRIES);
    let mut bytes = 0;
    while let Some(next) = waiting.front() {
        if batch.len() == MAX_BATCH_ENTRIES || (!batch.is_empty() && bytes + next.size > max_bytes) {
            break;
        }
        bytes += next.size;
        batch.extend(waiting.pop_front());
    }
    batch
}

/// Sends a batch until every entry is answered: sent, failed, or past its deadline.
async fn deliver(
    backend: Arc<QueueBackend>,
    role: AgentRole,
    mut batch: Vec<Pending>,
    metrics: Arc<Metrics>,
    records: RecordSink,
) {
    let queue = role.name();
    let mut attempt = 0;
    loop {
        let messages: Vec<&QueueMessage> = batch.iter().map(|pending| &pending.message).collect();
        let started = Instant::now();
        let outcomes = backend.send_batch(role, &messages).await;
        metrics.sqs_batch_seconds.with_label_values(&[queue]).observe(started.elapsed().as_secs_f64());
        metrics.sqs_batch_entries.observe(messages.len() as f64);
        let now = Instant::now();
        let mut retry = Vec::new();
        let mut last_reason = String::new();
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
                EntryOutcome::Sent(sqs_message_id) => {
                    metrics.forward_entries.with_label_values(&[queue, "sent"]).inc();
                    records.record(pending.message.record(&sqs_message_id, pending.size));
                    pending.answer(Ok(ForwardReceipt { sqs_message_id, queue: role }));
                }
                EntryOutcome::Failed(reason) => {
                    metrics.forward_entries.with_label_values(&[queue, "failed"]).inc();
                    log::warn!(
                        queue = queue, message_id = pending.message.message_id.as_str(), reason = reason.as_str();
                        "forward refused by the queue"
                    );
                    let message = format!("The {queue} queue refused message {}: {reason}", pending.message.message_id);
                    pending.answer(Err(RequestError::new(ErrorCode::ForwardFailed, message)));
                }
                EntryOutcome::Retry(reason) if now >= pending.deadline => {
                    metrics.forward_entries.with_label_values(&[queue, "failed"]).inc();
                    log::warn!(
                        queue = queue, message_id = pending.message.message_id.as_str(), reason = reason.as_str();
                        "forward not delivered before its deadline"
                    );
                    let message = format!(
                        "Message {} was not accepted by the {queue} queue before the deadline: {reason}",
                        pending.message.message_id
                    );
                    pending.answer(Err(RequestError::new(ErrorCode::ForwardFailed, message)));
                }
                EntryOutcome::Retry(reason) => {
                    metrics.forward_entries.with_label_values(&[queue, "retried"]).inc();
                    last_reason = reason;
                    retry.push(pending);
                }
            }
        }
        let Some(first_deadline) = retry.iter().map(|pending| pending.deadline).min() else {
            return;
        };
        if attempt == 0 {
            log::warn!(queue = queue, entries = retry.len(), reason = last_reason.as_str(); "queue send failed, retrying with backoff");
        }
        let wait =
            crate::aws::backoff(attempt, RETRY_BASE, RETRY_CAP).min(first_deadline.saturating_duration_since(now));
        tokio::time::sleep(wait).await;
        attempt += 1;
        batch = retry;
    }
}

impl Actor for QueueDispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(DISPATCHER_MAILBOX_CAPACITY);
    }
}

impl Handler<Forward> for QueueDispatcher {
    type Result = ();

    fn handle(&mut self, msg: Forward, ctx: &mut Self::Context) {
        let size = msg.message.payload_size();
        if self.unanswered >= self.settings.dispatcher_max_pending.get() {
            let _ = msg.reply.send(Err(RequestError::busy("Too many forwards are waiting for the agent queues")));
            return;
        }
        if size > self.settings.sqs_max_batch_bytes.get() {
            let error = RequestError::new(
                ErrorCode::ForwardFailed,
                format!(
                    "Message {} is {size} bytes; the queue accepts at most {}",
                    msg.message.message_id,
                    self.settings.sqs_max_batch_bytes.get()
                ),
            );
            let _ = msg.reply.send(Err(error));
            return;
        }
        let role = msg.message.role;
        let now = Instant::now();
        self.lanes[role.index()].waiting.push_back(Pending {
            message: msg.message,
            reply: msg.reply,
            size,
            enqueued_at: now,
            deadline: now + self.settings.forward_deadline,
        });
        self.unanswered += 1;
        self.metrics.forward_pending.set(self.unanswered as i64);
        self.pump(role, ctx);
    }
}

impl Handler<Flush> for QueueDispatcher {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) -> Self::Result {
        self.flushing = true;
        for role in AgentRole::ALL {
            self.pump(role, ctx);
        }
        let (done, waiting) = oneshot::channel();
        if self.unanswered == 0 {
            let _ = done.send(());
        } else {
            self.flush_waiters.push(done);
        }
        Box::pin(async move {
            let _ = waiting.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use serde_json::{json, Value};

    use super::*;
    use crate::{
        persistence::{local::LocalStore, Persistence, RecordStore},
        protocol::ForwardRequest,
    };

    /// Settings of a dispatcher lingering `linger` for a batch to fill.
    fn settings(linger: Duration) -> DispatcherSettings {
        DispatcherSettings {
            sqs_batch_linger: linger,
            sqs_max_batch_bytes: NonZeroUsize::new(256 * 1024).expect("not zero"),
            forward_deadline: Duration::from_secs(30),
            dispatcher_max_pending: NonZeroUsize::new(1000).expect("not zero"),
        }
    }

    /// A dispatcher over the local spool in `dir`, and the metrics it keeps.
    fn dispatcher_with_metrics(
        dir: &std::path::Path,
        settings: DispatcherSettings,
    ) -> (Addr<QueueDispatcher>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let store = RecordStore::Local(LocalStore::open(dir, 1 << 30).expect("record store"));
        let (_persistence, records) = Persistence::new(store, 1000, Duration::from_secs(60), metrics.clone());
        let backend = QueueBackend::Spool(Spool::open(dir, 1 << 30).expect("spool"));
        (QueueDispatcher::new(backend, settings, metrics.clone(), records).start(), metrics)
    }

    fn dispatcher(dir: &std::path::Path, settings: DispatcherSettings) -> Addr<QueueDispatcher> {
        dispatcher_with_metrics(dir, settings).0
    }

    /// Forward `n` to the dev queue, as a session makes it.
    fn message(n: usize) -> QueueMessage {
        let body = json!({"action": "forward", "type": "dev", "message_id": format!("m{n}"), "data": {"n": n}});
        let request = ForwardRequest {
            message_type: "dev".into(),
            message_id: format!("m{n}"),
            project_id: "p".into(),
            body: body.as_object().expect("an object").clone(),
        };
        QueueMessage::new(AgentRole::Dev, request, "connection", None)
    }

    /// Sends `message` to the dispatcher; its answer arrives on the receiver.
    fn forward(dispatcher: &Addr<QueueDispatcher>, message: QueueMessage) -> oneshot::Receiver<ForwardResult> {
        let (reply, answer) = oneshot::channel();
        dispatcher.do_send(Forward { message, reply });
        answer
    }

    /// The answer to a forward, within a deadline no loaded machine misses.
    async fn outcome(answer: &mut oneshot::Receiver<ForwardResult>) -> ForwardResult {
        tokio::time::timeout(Duration::from_secs(5), answer).await.expect("answered in time").expect("answered")
    }

    /// Whether a forward is still unanswered after a while (it waits for the linger).
    async fn still_waiting(answer: &mut oneshot::Receiver<ForwardResult>) -> bool {
        tokio::time::timeout(Duration::from_millis(100), answer).await.is_err()
    }

    async fn flush(dispatcher: &Addr<QueueDispatcher>) {
        tokio::time::timeout(Duration::from_secs(5), dispatcher.send(Flush))
            .await
            .expect("the flush answered once every forward was")
            .expect("flushed");
    }

    #[actix_rt::test]
    async fn full_batches_leave_at_once_the_rest_at_the_flush_each_answered_once_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A linger no test waits for: what leaves before the flush left because its batch was full.
        let dispatcher = dispatcher(dir.path(), settings(Duration::from_secs(3600)));
        let mut answers: Vec<_> = (0..25).map(|n| forward(&dispatcher, message(n))).collect();
        let rest = answers.split_off(2 * MAX_BATCH_ENTRIES);
        for answer in answers {
            let receipt = tokio::time::timeout(Duration::from_secs(5), answer)
                .await
                .expect("a full batch left")
                .expect("answered");
            assert_eq!(receipt.expect("confirmed").queue, AgentRole::Dev);
        }
        let mut rest: Vec<_> = rest.into_iter().map(Box::pin).collect();
        for answer in &mut rest {
            let early = tokio::time::timeout(Duration::from_millis(100), answer.as_mut()).await;
            assert!(early.is_err(), "a forward of a batch that is not full waits for the linger");
        }
        flush(&dispatcher).await;
        let mut ids = std::collections::HashSet::new();
        for answer in rest {
            let receipt = tokio::time::timeout(Duration::from_secs(5), answer)
                .await
                .expect("the flush sent it")
                .expect("answered")
                .expect("confirmed");
            assert!(ids.insert(receipt.sqs_message_id), "one id per forward");
        }

        let spooled = std::fs::read_to_string(dir.path().join("spool/dev.jsonl")).expect("the dev spool");
        let order: Vec<u64> = spooled
            .lines()
            .map(|line| {
                serde_json::from_str::<Value>(line).expect("a JSON line")["body"]["data"]["n"].as_u64().expect("n")
            })
            .collect();
        assert_eq!(order, (0..25).collect::<Vec<u64>>(), "the queue got each forward once, in arrival order");
    }

    #[actix_rt::test]
    async fn no_forward_waits_much_longer_than_the_linger() {
        let dir = tempfile::tempdir().expect("tempdir");
        let linger = Duration::from_secs(2);
        let dispatcher = dispatcher(dir.path(), settings(linger));
        // The first forward arms the linger timer; nine more fill its batch, which leaves at once.
        let mut first_batch = vec![forward(&dispatcher, message(0))];
        tokio::time::sleep(linger / 20).await;
        first_batch.extend((1..MAX_BATCH_ENTRIES).map(|n| forward(&dispatcher, message(n))));
        for answer in &mut first_batch {
            assert!(outcome(answer).await.is_ok());
        }
        // Arrived early in the first forward's linger: when that timer fires, it waits for the rest
        // of its own.
        let sent = Instant::now();
        let mut late = forward(&dispatcher, message(MAX_BATCH_ENTRIES));
        assert!(outcome(&mut late).await.is_ok());
        let waited = sent.elapsed();
        assert!(waited < linger * 3 / 2, "waited {waited:?} with a linger of {linger:?}");
    }

    #[actix_rt::test]
    async fn a_batch_leaves_at_once_when_the_next_forward_would_take_it_past_the_byte_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let messages: Vec<QueueMessage> = (1..=4).map(message).collect();
        let limit: usize = messages[..3].iter().map(QueueMessage::payload_size).sum();
        let dispatcher = dispatcher(
            dir.path(),
            DispatcherSettings {
                sqs_max_batch_bytes: NonZeroUsize::new(limit).expect("not zero"),
                ..settings(Duration::from_secs(3600))
            },
        );
        let mut messages = messages.into_iter();
        let mut fitting: Vec<_> = messages.by_ref().take(3).map(|message| forward(&dispatcher, message)).collect();
        for answer in &mut fitting {
            assert!(still_waiting(answer).await, "forwards of exactly the byte limit are no full batch yet");
        }
        let mut last = forward(&dispatcher, messages.next().expect("a fourth"));
        for answer in &mut fitting {
            assert!(outcome(answer).await.is_ok(), "the three that fit left as soon as a fourth came");
        }
        assert!(still_waiting(&mut last).await, "the fourth did not fit their batch: it waits for the linger");
        flush(&dispatcher).await;
        assert!(outcome(&mut last).await.is_ok());
    }

    #[actix_rt::test]
    async fn a_forward_of_the_byte_limit_is_sent_and_a_larger_one_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fits, too_large) = (message(1), message(10));
        let limit = fits.payload_size();
        assert!(too_large.payload_size() > limit);
        let settings = DispatcherSettings {
            sqs_max_batch_bytes: NonZeroUsize::new(limit).expect("not zero"),
            ..settings(Duration::ZERO)
        };
        let dispatcher = dispatcher(dir.path(), settings);
        assert!(outcome(&mut forward(&dispatcher, fits)).await.is_ok());
        let refused = outcome(&mut forward(&dispatcher, too_large)).await.expect_err("too large for a batch");
        assert_eq!(refused.code, ErrorCode::ForwardFailed);
        assert!(refused.message.contains("m10"), "{}", refused.message);
    }

    #[actix_rt::test]
    async fn past_dispatcher_max_pending_a_forward_is_answered_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = DispatcherSettings {
            dispatcher_max_pending: NonZeroUsize::new(2).expect("not zero"),
            ..settings(Duration::from_secs(3600))
        };
        let dispatcher = dispatcher(dir.path(), settings);
        let mut pending: Vec<_> = (1..=2).map(|n| forward(&dispatcher, message(n))).collect();
        let refused = outcome(&mut forward(&dispatcher, message(3))).await.expect_err("a third is one too many");
        assert_eq!(refused.code, ErrorCode::Busy);
        flush(&dispatcher).await;
        for answer in &mut pending {
            assert!(outcome(answer).await.is_ok());
        }
    }

    #[actix_rt::test]
    async fn a_forward_not_sent_by_its_deadline_is_answered_forward_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = DispatcherSettings { forward_deadline: Duration::ZERO, ..settings(Duration::from_secs(3600)) };
        let dispatcher = dispatcher(dir.path(), settings);
        let failed = outcome(&mut forward(&dispatcher, message(1))).await.expect_err("past its deadline");
        assert_eq!(failed.code, ErrorCode::ForwardFailed);
        assert!(failed.message.contains("queue busy"), "{}", failed.message);
        // Answered means no longer pending: a flush has nothing to wait for.
        flush(&dispatcher).await;
    }

    #[actix_rt::test]
    async fn a_flush_answers_when_every_forward_is_answered_and_at_once_when_none_is_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (dispatcher, metrics) = dispatcher_with_metrics(dir.path(), settings(Duration::from_secs(3600)));
        flush(&dispatcher).await;
        // Sessions try_send: the mailbox holds a burst far larger than actix's default of 16.
        let mut answers = Vec::new();
        for n in 0..100 {
            let (reply, answer) = oneshot::channel();
            dispatcher.try_send(Forward { message: message(n), reply }).expect("room in the mailbox");
            answers.push(answer);
        }
        flush(&dispatcher).await;
        for mut answer in answers {
            assert!(matches!(answer.try_recv(), Ok(Ok(_))), "confirmed before the flush answered");
        }
        // What operators read: nothing pending, waiting or in flight once all is answered.
        assert_eq!(metrics.forward_pending.get(), 0);
        for state in ["waiting", "in_flight"] {
            assert_eq!(metrics.forward_queue_entries.with_label_values(&["dev", state]).get(), 0, "{state}");
        }
    }
}
