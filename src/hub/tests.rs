//! The hub with an engine double: which projects it follows, its fan-out, and the resume seam
//! with history reads the test lets go of.

use std::sync::Mutex;

use actix_http::ws;
use tokio::sync::mpsc;

use super::*;
use crate::{
    connection::{
        outbound_body::{client_view::FrameReader, OutboundBody},
        outbox::OutboxLimits,
    },
    engine::{
        approvals::{AskOutcome, DecideOutcome, Undelivered},
        memory::MemoryEngine,
        positions::{new_epoch, Entries, HistorySettings},
        presence::Presence,
        streams::{Append, AppendOutcome, CancelOutcome, StartOutcome},
        EngineFuture, Health, Published,
    },
    protocol::{
        approvals::{ApprovalAsk, Decision},
        streams::StreamMeta,
    },
};

/// The memory engine, recording which projects the hub follows and keeping the delivery the
/// hub handed it; once told to, it holds back the answer to each history read (first page or
/// next) until the test lets it go.
struct Recording {
    engine: MemoryEngine,
    followed: Mutex<Vec<String>>,
    delivery: Mutex<Option<Arc<dyn LocalDelivery>>>,
    held_reads: Mutex<Option<mpsc::UnboundedSender<HeldRead>>>,
}

/// A history read the engine double made and holds back: the read is over (a publication from
/// here on is not in it) and its answer waits for `answer`.
struct HeldRead {
    /// Where the read started: the client's `since` for a first page, else the replay's offset.
    after: Option<u64>,
    answer: oneshot::Sender<()>,
}

impl HeldRead {
    fn answer(self) {
        // A replay stopped meanwhile no longer waits: what the client then gets is the finding.
        let _ = self.answer.send(());
    }
}

impl Recording {
    fn new() -> Arc<Self> {
        let settings = HistorySettings {
            size: 10,
            ttl: Duration::from_secs(60),
            max_projects: 10,
            max_bytes: usize::MAX,
            max_total_bytes: usize::MAX,
        };
        Arc::new(Recording {
            engine: MemoryEngine::new(settings),
            followed: Mutex::default(),
            delivery: Mutex::default(),
            held_reads: Mutex::default(),
        })
    }

    /// From now on each history read is held back: the reads, in the order the hub makes them.
    fn hold_reads(&self) -> HistoryReads {
        let (reads, held) = mpsc::unbounded_channel();
        *self.held_reads.lock().unwrap() = Some(reads);
        HistoryReads(held)
    }

    /// `read`, made now, answered when the test lets it go (at once unless reads are held).
    fn held<T: Send + 'static>(&self, after: Option<u64>, read: EngineFuture<T>) -> EngineFuture<T> {
        let Some(reads) = self.held_reads.lock().unwrap().clone() else { return read };
        async move {
            let answer = read.await;
            let (let_go, waited) = oneshot::channel();
            reads.send(HeldRead { after, answer: let_go }).expect("the test holds the reads");
            waited.await.expect("the test lets the read go");
            answer
        }
        .boxed()
    }

    fn followed(&self) -> Vec<String> {
        self.followed.lock().unwrap().clone()
    }

    fn subscriber_count(&self, project_id: &str) -> usize {
        self.delivery.lock().unwrap().as_ref().expect("started").subscriber_count(&project_id.into())
    }
}

impl Engine for Recording {
    fn describe(&self) -> &'static str {
        "recording"
    }

    fn start(&self, delivery: Arc<dyn LocalDelivery>) {
        *self.delivery.lock().unwrap() = Some(delivery.clone());
        self.engine.start(delivery);
    }

    fn subscribe(&self, project_id: &ProjectId) -> BoxFuture<'static, ()> {
        self.followed.lock().unwrap().push(format!("+{project_id}"));
        self.engine.subscribe(project_id)
    }

    fn unsubscribe(&self, project_id: &ProjectId) {
        self.followed.lock().unwrap().push(format!("-{project_id}"));
    }

    fn publish(&self, project_id: &ProjectId, frame: ByteString) -> BoxFuture<'static, Published> {
        self.engine.publish(project_id, frame)
    }

    fn recover(
        &self,
        project_id: &ProjectId,
        since: Option<&StreamPosition>,
        max_bytes: usize,
    ) -> EngineFuture<Recovery> {
        self.held(since.map(|since| since.offset), self.engine.recover(project_id, since, max_bytes))
    }

    fn history(
        &self,
        project_id: &ProjectId,
        since_offset: u64,
        limit: usize,
        max_bytes: usize,
    ) -> EngineFuture<(StreamPosition, Entries)> {
        self.held(Some(since_offset), self.engine.history(project_id, since_offset, limit, max_bytes))
    }

    fn stream_start(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        meta: &StreamMeta,
        frame: ByteString,
    ) -> EngineFuture<StartOutcome> {
        self.engine.stream_start(project_id, stream_id, meta, frame)
    }

    fn stream_append(&self, project_id: &ProjectId, append: Append) -> EngineFuture<AppendOutcome> {
        self.engine.stream_append(project_id, append)
    }

    fn stream_end(&self, project_id: &ProjectId, end: End) -> EngineFuture<EndOutcome> {
        self.engine.stream_end(project_id, end)
    }

    fn approval_request(
        &self,
        project_id: &ProjectId,
        ask: &ApprovalAsk,
        frame: ByteString,
    ) -> EngineFuture<AskOutcome> {
        self.engine.approval_request(project_id, ask, frame)
    }

    fn approval_decide(
        &self,
        project_id: &ProjectId,
        approval_id: &str,
        decision: &Decision,
        frame: ByteString,
        lease: Duration,
    ) -> EngineFuture<DecideOutcome> {
        self.engine.approval_decide(project_id, approval_id, decision, frame, lease)
    }

    fn approval_delivered(&self, project_id: &ProjectId, approval_id: &str) -> EngineFuture<()> {
        self.engine.approval_delivered(project_id, approval_id)
    }

    fn pending_approvals(&self, project_id: &ProjectId) -> EngineFuture<Vec<ApprovalAsk>> {
        self.engine.pending_approvals(project_id)
    }

    fn due_approvals(&self) -> EngineFuture<Vec<(ProjectId, String)>> {
        self.engine.due_approvals()
    }

    fn claim_undelivered(&self, lease: Duration) -> EngineFuture<Vec<Undelivered>> {
        self.engine.claim_undelivered(lease)
    }

    fn stream_cancel(
        &self,
        project_id: &ProjectId,
        stream_id: &StreamId,
        message_id: &str,
    ) -> EngineFuture<CancelOutcome> {
        self.engine.stream_cancel(project_id, stream_id, message_id)
    }

    fn open_streams(&self, project_id: &ProjectId) -> EngineFuture<Vec<StreamSnapshot>> {
        self.engine.open_streams(project_id)
    }

    fn stream_snapshot(&self, project_id: &ProjectId, stream_id: &StreamId) -> EngineFuture<Option<StreamSnapshot>> {
        self.engine.stream_snapshot(project_id, stream_id)
    }

    fn health(&self) -> Health {
        self.engine.health()
    }

    fn presence_join(&self, project_id: &ProjectId, member: &Arc<Member>) {
        self.engine.presence_join(project_id, member);
    }

    fn presence_leave(&self, project_id: &ProjectId, member: &Arc<Member>) {
        self.engine.presence_leave(project_id, member);
    }

    fn presence(&self, project_id: &ProjectId, list: bool) -> EngineFuture<Presence> {
        self.engine.presence(project_id, list)
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        self.engine.close()
    }
}

/// Stands in for a session: the hub only tells it to drain.
struct Sessionless;

impl Actor for Sessionless {
    type Context = Context<Self>;
}

impl Handler<Drain> for Sessionless {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Self::Context) {}
}

fn hub(engine: Arc<Recording>) -> Addr<Hub> {
    hub_holding(engine, HoldLimits::quarter_of_queue(64, 1 << 20), 1 << 16)
}

/// A hub whose seams hold `hold` and whose replays read `page_bytes` a page.
fn hub_holding(engine: Arc<Recording>, hold: HoldLimits, page_bytes: usize) -> Addr<Hub> {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let streams = StreamHubSettings {
        rollup: Duration::from_millis(40),
        idle_timeout: Duration::from_secs(300),
        idle_sweep: Duration::from_secs(3600),
    };
    Hub::new(metrics, engine, hold, page_bytes, true, streams).start()
}

/// Registers a connection subscribed to `projects`; its outbox and the body that keeps it
/// open.
async fn connect(hub: &Addr<Hub>, id: &str, projects: &[&str]) -> (Outbox, OutboundBody) {
    let limits = OutboxLimits { max_messages: 64, max_bytes: 1 << 20, write_delay: Duration::ZERO };
    let (outbox, body) = Outbox::new(limits, oneshot::channel().0);
    let member = Arc::new(Member::new(id.into(), None, "2026-01-01T00:00:00Z", None));
    let connect = Connect {
        id: id.into(),
        outbox: outbox.clone(),
        projects: projects.iter().map(|project| (*project).into()).collect(),
        session: Sessionless.start().recipient(),
        member,
    };
    hub.send(connect).await.expect("the hub");
    (outbox, body)
}

#[actix_rt::test]
async fn the_engine_follows_a_project_from_its_first_subscriber_to_its_last_and_reads_its_count() {
    let engine = Recording::new();
    let hub = hub(engine.clone());
    let _first = connect(&hub, "c1", &["p"]).await;
    let _second = connect(&hub, "c2", &["p"]).await;
    assert_eq!(engine.followed(), ["+p"], "subscribed once, for the first subscriber");
    assert_eq!(engine.subscriber_count("p"), 2);
    hub.send(Disconnect { id: "c1".into() }).await.expect("the hub");
    assert_eq!((engine.followed().len(), engine.subscriber_count("p")), (1, 1));
    hub.send(Disconnect { id: "c2".into() }).await.expect("the hub");
    assert_eq!(engine.followed(), ["+p", "-p"], "unsubscribed with the last");
    assert_eq!(engine.subscriber_count("p"), 0);
}

#[actix_rt::test]
async fn a_publication_the_engine_delivers_is_queued_once_to_each_subscriber_of_its_project() {
    let engine = Recording::new();
    let hub = hub(engine.clone());
    let (subscriber, _body) = connect(&hub, "c1", &["p"]).await;
    let (elsewhere, _other_body) = connect(&hub, "c2", &["q"]).await;
    let frame = ByteString::from_static(r#"{"type":"message","data":1}"#);
    let published = engine.publish(&"p".into(), frame.clone()).await;
    let position = published.position.expect("a position");
    assert_eq!((position.offset, published.subscribers), (1, 1));
    assert_eq!(subscriber.queued_bytes(), position.spliced_into(&frame).len(), "the frame, with its position");
    assert_eq!(elsewhere.queued_bytes(), 0);
    hub.send(Disconnect { id: "c1".into() }).await.expect("the hub");
    assert_eq!(engine.publish(&"p".into(), frame).await.subscribers, 0);
}

/// Longest a test waits for a frame or a history read the hub owes it.
const WAIT: Duration = Duration::from_secs(5);

/// The history reads the engine double holds back, in the order the hub makes them.
struct HistoryReads(mpsc::UnboundedReceiver<HeldRead>);

impl HistoryReads {
    async fn next(&mut self) -> HeldRead {
        let read = tokio::time::timeout(WAIT, self.0.recv()).await.expect("a history read within 5 s");
        read.expect("the engine double holds the reads")
    }

    fn assert_none_made(&mut self) {
        if let Ok(read) = self.0.try_recv() {
            panic!("a history read no one expected, after {:?}", read.after);
        }
    }
}

const MESSAGE: &str = r#"{"type":"message","data":"x"}"#;

fn message() -> ByteString {
    ByteString::from_static(MESSAGE)
}

/// Publishes `count` messages to project `p`, each reaching `subscribers` (held back or queued);
/// the position of the last.
async fn publish(engine: &Recording, count: usize, subscribers: usize) -> StreamPosition {
    let mut last = None;
    for _ in 0..count {
        let published = engine.publish(&"p".into(), message()).await;
        assert_eq!(published.subscribers, subscribers, "the publication's receipt");
        last = published.position;
    }
    last.expect("a position")
}

/// Holds of two publications (of [`MESSAGE`] at a one-digit offset): by count, and by bytes.
fn holds_of_two() -> [HoldLimits; 2] {
    let frame_bytes = StreamPosition { offset: 9, epoch: new_epoch() }.spliced_into(MESSAGE).len();
    [HoldLimits { messages: 2, bytes: 1 << 20 }, HoldLimits { messages: 64, bytes: 2 * frame_bytes }]
}

/// `c1` (connected) resumes project `p` after `since`.
async fn resume(hub: &Addr<Hub>, since: StreamPosition) {
    subscribe(hub, Some(since), true).await;
}

/// `c1` (connected) subscribes to project `p`.
async fn subscribe(hub: &Addr<Hub>, since: Option<StreamPosition>, with_position: bool) {
    let member = Arc::new(Member::new("c1".into(), None, "2026-01-01T00:00:00Z", None));
    let subscribe = Subscribe {
        id: "c1".into(),
        project_id: "p".into(),
        request_id: None,
        since,
        with_position,
        join_leave: false,
        member,
    };
    hub.send(subscribe).await.expect("the hub");
}

/// The client's next `count` frames (fewer if they do not come), each as `message OFFSET` or
/// `confirmed recovered=BOOL at OFFSET`.
async fn frames(client: &mut FrameReader, count: usize) -> Vec<String> {
    client.next_frames(count, WAIT).await.iter().map(described).collect()
}

fn described(frame: &ws::Frame) -> String {
    let ws::Frame::Text(text) = frame else { return format!("{frame:?}") };
    let frame: serde_json::Value = serde_json::from_slice(text).expect("a JSON frame");
    match frame["type"].as_str() {
        Some("message") => format!("message {}", frame["offset"]),
        Some("subscription_confirmed") => format!("confirmed recovered={} at {}", frame["recovered"], frame["offset"]),
        _ => frame.to_string(),
    }
}

fn messages(offsets: std::ops::RangeInclusive<u64>) -> impl Iterator<Item = String> {
    offsets.map(|offset| format!("message {offset}"))
}

/// After a resume's frames: the next publication comes live, alone (nothing held is released
/// twice), and the hub read the history no more.
async fn assert_live_after(engine: &Recording, client: &mut FrameReader, reads: &mut HistoryReads) {
    let next = publish(engine, 1, 1).await;
    assert_eq!(frames(client, 1).await, [format!("message {}", next.offset)]);
    reads.assert_none_made();
}

#[actix_rt::test]
async fn publications_during_the_first_page_read_follow_the_replay_once_each() {
    for hold in holds_of_two() {
        let engine = Recording::new();
        let hub = hub_holding(engine.clone(), hold, 1 << 16);
        let top = publish(&engine, 3, 0).await;
        let (_outbox, body) = connect(&hub, "c1", &[]).await;
        let mut client = FrameReader::new(body);
        let mut reads = engine.hold_reads();
        resume(&hub, StreamPosition { offset: 1, ..top }).await;
        let first_page = reads.next().await;
        assert_eq!(first_page.after, Some(1));
        // Two: the hold is full, not emptied (which would take a history read).
        publish(&engine, 2, 1).await;
        first_page.answer();
        let expected: Vec<String> =
            ["confirmed recovered=true at 3".to_owned()].into_iter().chain(messages(2..=5)).collect();
        assert_eq!(frames(&mut client, 5).await, expected, "the first page (2, 3), then the hold (4, 5), {hold:?}");
        assert_live_after(&engine, &mut client, &mut reads).await;
    }
}

#[actix_rt::test]
async fn publications_during_the_last_page_read_follow_the_replay_once_each() {
    let engine = Recording::new();
    // A page is one publication: the replay reads 2, then 3, 4 and 5.
    let hub = hub_holding(engine.clone(), HoldLimits { messages: 4, bytes: 1 << 20 }, 1);
    let top = publish(&engine, 4, 0).await;
    let (_outbox, body) = connect(&hub, "c1", &[]).await;
    let mut client = FrameReader::new(body);
    let mut reads = engine.hold_reads();
    resume(&hub, StreamPosition { offset: 1, ..top }).await;
    let first_page = reads.next().await;
    // Held, and in the history by the last page.
    publish(&engine, 1, 1).await;
    first_page.answer();
    for after in 2..=3 {
        let page = reads.next().await;
        assert_eq!(page.after, Some(after));
        page.answer();
    }
    let last_page = reads.next().await;
    assert_eq!(last_page.after, Some(4));
    // Held only: the last page was read before them.
    publish(&engine, 2, 1).await;
    last_page.answer();
    let expected: Vec<String> =
        ["confirmed recovered=true at 4".to_owned()].into_iter().chain(messages(2..=7)).collect();
    assert_eq!(frames(&mut client, 7).await, expected, "5 from the last page, not again from the hold");
    assert_live_after(&engine, &mut client, &mut reads).await;
}

#[actix_rt::test]
async fn a_hold_emptied_while_the_first_page_is_read_is_read_from_the_history_instead() {
    for hold in holds_of_two() {
        let engine = Recording::new();
        let hub = hub_holding(engine.clone(), hold, 1 << 16);
        let top = publish(&engine, 2, 0).await;
        let (_outbox, body) = connect(&hub, "c1", &[]).await;
        let mut client = FrameReader::new(body);
        let mut reads = engine.hold_reads();
        // Nothing missed: the first page is empty and reaches the top.
        resume(&hub, top).await;
        let first_page = reads.next().await;
        // 3 to 6: the hold of two is emptied at 5, and keeps 5 and 6.
        publish(&engine, 4, 1).await;
        first_page.answer();
        let next_page = reads.next().await;
        assert_eq!(next_page.after, Some(2), "what the hold let go of is read from the first page's end, {hold:?}");
        next_page.answer();
        let expected: Vec<String> =
            ["confirmed recovered=true at 2".to_owned()].into_iter().chain(messages(3..=6)).collect();
        assert_eq!(frames(&mut client, 5).await, expected, "{hold:?}");
        assert_live_after(&engine, &mut client, &mut reads).await;
    }
}

#[actix_rt::test]
async fn a_resume_the_history_cannot_cover_reads_what_its_emptied_hold_let_go_of_from_the_top() {
    let engine = Recording::new();
    let hub = hub_holding(engine.clone(), HoldLimits { messages: 2, bytes: 1 << 20 }, 1 << 16);
    let top = publish(&engine, 3, 0).await;
    let (_outbox, body) = connect(&hub, "c1", &[]).await;
    let mut client = FrameReader::new(body);
    let mut reads = engine.hold_reads();
    resume(&hub, StreamPosition { offset: 1, epoch: format!("not {}", top.epoch) }).await;
    let first_page = reads.next().await;
    // 4 to 6: the hold of two is emptied at 6.
    publish(&engine, 3, 1).await;
    first_page.answer();
    let next_page = reads.next().await;
    assert_eq!(next_page.after, Some(3), "from the top, not from the client's offset in another epoch");
    next_page.answer();
    let expected: Vec<String> =
        ["confirmed recovered=false at 3".to_owned()].into_iter().chain(messages(4..=6)).collect();
    assert_eq!(frames(&mut client, 4).await, expected);
    assert_live_after(&engine, &mut client, &mut reads).await;
}

#[actix_rt::test]
async fn an_unsubscribe_is_confirmed_and_ends_the_projects_deliveries() {
    let engine = Recording::new();
    let hub = hub(engine.clone());
    let (_outbox, body) = connect(&hub, "c1", &["p"]).await;
    let mut client = FrameReader::new(body);
    let confirmation = ByteString::from_static(r#"{"type":"unsubscription_confirmed","project_id":"p"}"#);
    hub.send(Unsubscribe { id: "c1".into(), project_id: "p".into(), confirmation: confirmation.clone() })
        .await
        .expect("the hub");
    assert_eq!(client.next_frames(1, WAIT).await, [ws::Frame::Text(confirmation.into_bytes())]);
    assert_eq!(engine.followed(), ["+p", "-p"]);
    assert_eq!(engine.publish(&"p".into(), message()).await.subscribers, 0);
}

/// Stands in for a session, telling the test when the hub asked it to drain.
struct Draining(mpsc::UnboundedSender<std::time::Instant>);

impl Actor for Draining {
    type Context = Context<Self>;
}

impl Handler<Drain> for Draining {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Self::Context) {
        let _ = self.0.send(std::time::Instant::now());
    }
}

#[actix_rt::test]
async fn the_drain_spreads_its_closes_over_the_window_and_answers_once_the_last_connection_left() {
    let hub = hub(Recording::new());
    let (told, mut drains) = mpsc::unbounded_channel();
    let ids = ["c1", "c2", "c3"];
    for id in ids {
        let (outbox, _body) = Outbox::new(
            OutboxLimits { max_messages: 64, max_bytes: 1 << 20, write_delay: Duration::ZERO },
            oneshot::channel().0,
        );
        let connect = Connect {
            id: id.into(),
            outbox,
            projects: Vec::new(),
            session: Draining(told.clone()).start().recipient(),
            member: Arc::new(Member::new(id.into(), None, "2026-01-01T00:00:00Z", None)),
        };
        hub.send(connect).await.expect("the hub");
    }
    let (emptied, mut empty) = oneshot::channel();
    let window = Duration::from_millis(900);
    let started = std::time::Instant::now();
    hub.do_send(DrainAll { window, emptied });
    let mut told_after = Vec::new();
    for _ in ids {
        let told = tokio::time::timeout(WAIT, drains.recv()).await.expect("told within 5 s").expect("a session");
        told_after.push(told - started);
    }
    // Client i of n is told at i/n of the window: 0, 300 and 600 ms (the upper bounds loose, for
    // a loaded machine).
    let earliest = [Duration::ZERO, window / 3, window * 2 / 3];
    for (index, (told, earliest)) in told_after.iter().zip(earliest).enumerate() {
        assert!(
            *told >= earliest && *told < earliest + window / 2,
            "client {index} told after {told:?}: {told_after:?}"
        );
    }
    for id in &ids[..2] {
        hub.send(Disconnect { id: (*id).into() }).await.expect("the hub");
    }
    assert!(empty.try_recv().is_err(), "a connection is left");
    hub.send(Disconnect { id: ids[2].into() }).await.expect("the hub");
    tokio::time::timeout(WAIT, empty).await.expect("answered once emptied").expect("the hub");
}

#[actix_rt::test]
async fn a_resume_during_a_resume_is_the_one_replayed_and_the_earlier_one_only_confirms() {
    let engine = Recording::new();
    let hub = hub_holding(engine.clone(), HoldLimits { messages: 2, bytes: 1 << 20 }, 1 << 16);
    let top = publish(&engine, 2, 0).await;
    let (_outbox, body) = connect(&hub, "c1", &[]).await;
    let mut client = FrameReader::new(body);
    let mut reads = engine.hold_reads();
    let since = StreamPosition { offset: 1, ..top };
    resume(&hub, since.clone()).await;
    let earlier = reads.next().await;
    // 3 to 7: the hold of two is emptied at 5 and at 7 before the second resume starts.
    publish(&engine, 5, 1).await;
    resume(&hub, since).await;
    let later = reads.next().await;
    earlier.answer();
    assert_eq!(frames(&mut client, 1).await, ["confirmed recovered=true at 2"], "only confirmed");
    later.answer();
    let expected: Vec<String> =
        ["confirmed recovered=true at 7".to_owned()].into_iter().chain(messages(2..=7)).collect();
    assert_eq!(frames(&mut client, 7).await, expected, "one replay, from the later resume's read");
    assert_live_after(&engine, &mut client, &mut reads).await;
}

#[test]
fn a_hold_is_a_quarter_of_an_outbound_queue_and_at_least_one_message() {
    let hold = HoldLimits::quarter_of_queue(64, 1 << 20);
    assert_eq!((hold.messages, hold.bytes), (16, 1 << 18));
    let hold = HoldLimits::quarter_of_queue(1, 3);
    assert_eq!((hold.messages, hold.bytes), (1, 0));
}

#[actix_rt::test]
async fn a_subscribe_is_confirmed_with_the_position_asked_for_then_goes_live() {
    for with_position in [false, true] {
        let engine = Recording::new();
        let hub = hub(engine.clone());
        publish(&engine, 2, 0).await;
        let (_outbox, body) = connect(&hub, "c1", &[]).await;
        let mut client = FrameReader::new(body);
        let mut reads = engine.hold_reads();
        subscribe(&hub, None, with_position).await;
        if with_position {
            reads.next().await.answer();
        }
        let at = if with_position { "2" } else { "null" };
        assert_eq!(frames(&mut client, 1).await, [format!("confirmed recovered=null at {at}")]);
        assert_live_after(&engine, &mut client, &mut reads).await;
    }
}

#[actix_rt::test]
async fn close_all_closes_every_connection_with_its_code() {
    let hub = hub(Recording::new());
    let mut clients = Vec::new();
    for id in ["c1", "c2"] {
        let (outbox, body) = connect(&hub, id, &["p"]).await;
        clients.push((outbox, FrameReader::new(body)));
    }
    hub.send(CloseAll { code: CloseCode::ServiceRestart }).await.expect("the hub");
    for (_outbox, client) in &mut clients {
        // Two asked for: the body ends after its close frame.
        let codes: Vec<Option<u16>> = client
            .next_frames(2, WAIT)
            .await
            .iter()
            .map(|frame| match frame {
                ws::Frame::Close(Some(reason)) => Some(reason.code.into()),
                _ => None,
            })
            .collect();
        assert_eq!(codes, [Some(CloseCode::ServiceRestart.code())]);
    }
}

#[actix_rt::test]
async fn an_unsubscribe_during_a_replay_stops_it() {
    let engine = Recording::new();
    // A page is one publication: the replay reads 2, then 3.
    let hub = hub_holding(engine.clone(), HoldLimits { messages: 2, bytes: 1 << 20 }, 1);
    let top = publish(&engine, 3, 0).await;
    let (_outbox, body) = connect(&hub, "c1", &[]).await;
    let mut client = FrameReader::new(body);
    let mut reads = engine.hold_reads();
    resume(&hub, StreamPosition { offset: 1, ..top }).await;
    reads.next().await.answer();
    let next_page = reads.next().await;
    assert_eq!(next_page.after, Some(2));
    let confirmation = ByteString::from_static(r#"{"type":"unsubscription_confirmed","project_id":"p"}"#);
    hub.send(Unsubscribe { id: "c1".into(), project_id: "p".into(), confirmation }).await.expect("the hub");
    next_page.answer();
    // A round trip through the hub, after which a replay still running would have pushed 3.
    let member = Arc::new(Member::new("c1".into(), None, "2026-01-01T00:00:00Z", None));
    let elsewhere = Subscribe {
        id: "c1".into(),
        project_id: "q".into(),
        request_id: None,
        since: None,
        with_position: false,
        join_leave: false,
        member,
    };
    hub.send(elsewhere).await.expect("the hub");
    let read: Vec<String> = client.next_frames(4, WAIT).await.iter().map(described).collect();
    let unsubscribed = r#"{"project_id":"p","type":"unsubscription_confirmed"}"#;
    let expected = ["confirmed recovered=true at 3", "message 2", unsubscribed, "confirmed recovered=null at null"];
    assert_eq!(read, expected);
}

#[actix_rt::test]
async fn a_replay_superseded_as_it_catches_up_releases_nothing() {
    let engine = Recording::new();
    // A page is one publication: the replay reads 2, then 3.
    let hub = hub_holding(engine.clone(), HoldLimits { messages: 2, bytes: 1 << 20 }, 1);
    let top = publish(&engine, 3, 0).await;
    let (_outbox, body) = connect(&hub, "c1", &[]).await;
    let mut client = FrameReader::new(body);
    let mut reads = engine.hold_reads();
    let since = StreamPosition { offset: 1, ..top };
    resume(&hub, since.clone()).await;
    reads.next().await.answer();
    let last_page = reads.next().await;
    // The resume again is queued before the replay, woken first, tells the hub it caught up.
    last_page.answer();
    let member = Arc::new(Member::new("c1".into(), None, "2026-01-01T00:00:00Z", None));
    let again = Subscribe {
        id: "c1".into(),
        project_id: "p".into(),
        request_id: None,
        since: Some(since),
        with_position: true,
        join_leave: false,
        member,
    };
    hub.do_send(again);
    for after in [1, 2] {
        let page = reads.next().await;
        assert_eq!(page.after, Some(after), "the second resume's own replay");
        page.answer();
    }
    let replay = || ["confirmed recovered=true at 3".to_owned()].into_iter().chain(messages(2..=3));
    let expected: Vec<String> = replay().chain(replay()).collect();
    assert_eq!(frames(&mut client, 6).await, expected, "each resume replayed, the second by its own replay");
    assert_live_after(&engine, &mut client, &mut reads).await;
}
