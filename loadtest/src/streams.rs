//! `streams`: agent streams against the same tokens sent as plain publications (issue 25).
//!
//! S streams, each on a project of its own with V viewers (connected with `?project_id=` before
//! anything is sent), and one agent connection per stream sending R tokens a second for D
//! seconds: `--as streams` as `stream_append`s with `at` (the gateway rolls them up),
//! `--as publications` as one `publish` each with data `{"text","sent_at_ns","seq"}`, `--as both`
//! one after the other, set side by side.
//!
//! A stream's frames carry nothing but its text, so the agent writes down when it sent each
//! append under the append's end offset (the stream's length after it) in a table its viewers
//! read in-process (the generator is one process): a frame of `length` N puts on screen every
//! append ending at or before N that the viewer had not shown yet, each with its
//! append-to-screen latency. Viewers check continuity (the previous length plus the text's bytes
//! is `length`) and, at the end, that their text is the agent's; in publications mode, that every
//! confirmed token arrived once. The servers' CPU over the run divided by the appends gives the
//! CPU per append of each mode.
//!
//! `--late-joiners N` then fills one more stream to `--snapshot-bytes` and, while its agent
//! goes on appending, subscribes N viewers one after another: the time from `subscribe` sent to
//! `stream_snapshot` received, and whether the snapshot and the appends after it are the
//! agent's text.
//!
//! Start at [`run`]: set-up, the measured window, the checks, the report, for each mode.

use std::{
    borrow::Cow,
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use clap::ValueEnum;
use futures_util::{
    stream::{SplitSink, SplitStream},
    SinkExt, StreamExt,
};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::{
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    net::{self, Target, Ws},
    report::{self, Report},
    scrape,
    stats::{self, Causes, SeqSet},
    Common, Progress,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// `stream_append` with `at`, rolled up by the gateway for viewers.
    Streams,
    /// One `publish` per token.
    Publications,
    /// Streams, then publications (fresh projects), side by side.
    Both,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Streams, each with its own agent connection and project.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Viewers of each stream.
    #[arg(long, default_value_t = 50)]
    pub viewers: usize,
    /// Appends (tokens) per second per stream.
    #[arg(long, default_value_t = 150.0)]
    pub rate: f64,
    /// Seconds of appending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// How the agents send their tokens.
    #[arg(long = "as", value_enum, default_value_t = Mode::Streams)]
    pub mode: Mode,
    /// Viewers that subscribe, one after another, to a stream of --snapshot-bytes (after the
    /// streams run).
    #[arg(long, default_value_t = 0)]
    pub late_joiners: usize,
    /// Bytes the late joiners' stream holds before the first of them subscribes (the server's
    /// STREAM_MAX_BYTES must leave room for it and for the appends while they join).
    #[arg(long, default_value_t = 500 * 1024)]
    pub snapshot_bytes: usize,
    /// Seconds to wait after the last append for what is still on its way.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Viewer connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

/// What the agents send, in turn: 4 to 8 bytes each, some with characters of 2 and 3 bytes
/// (lengths count UTF-8 bytes) and line breaks (escaped in JSON).
const TOKENS: [&str; 12] =
    [" the", " tests", " pass", " naïve", " → ok", "\n// ", " build", " café", " retry", " diff;", " 200 OK", " { }\n"];

/// The `n`-th token of stream `k`.
fn token(k: usize, n: u64) -> &'static str {
    TOKENS[(n as usize).wrapping_mul(7).wrapping_add(k) % TOKENS.len()]
}

/// Viewers sharing one latency histogram (as in `fanout`: one each would be cold memory).
const LATENCY_SHARDS: usize = 16;

/// How long an agent waits for the answer to its start or its end.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One stream's sends, shared by its agent and its viewers.
#[derive(Default)]
struct Timeline {
    /// (end offset, send time in ns since the epoch) of every append, in order. The agent pushes
    /// each before sending it, so no frame can reach a viewer with a length the table does not
    /// cover yet.
    sends: RwLock<Vec<(u64, u64)>>,
}

impl Timeline {
    fn push(&self, end: u64, sent_at_ns: u64) {
        self.sends.write().unwrap_or_else(|poisoned| poisoned.into_inner()).push((end, sent_at_ns));
    }
}

/// Counters every task of one mode's run shares.
struct Shared {
    /// Append-to-screen latency; viewer i records into shard i mod LATENCY_SHARDS.
    latency: Vec<Mutex<Histogram<u64>>>,
    connected: AtomicU64,
    /// (append, viewer) pairs on screen.
    shown: AtomicU64,
    /// (append, viewer) pairs the appends sent (streams) or confirmed (publications) call for.
    expected: AtomicU64,
    /// Viewers that got their stream's `stream_ended`.
    ended: AtomicU64,
    sent: AtomicU64,
    agent_errors: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            latency: (0..LATENCY_SHARDS).map(|_| Mutex::new(stats::histogram())).collect(),
            connected: AtomicU64::default(),
            shown: AtomicU64::default(),
            expected: AtomicU64::default(),
            ended: AtomicU64::default(),
            sent: AtomicU64::default(),
            agent_errors: AtomicU64::default(),
        }
    }
}

/// One mode's run: its shape, targets, the streams' send tables and the shared counters.
struct Plan {
    mode: Mode,
    streams: usize,
    viewers: usize,
    rate: f64,
    run_id: String,
    targets: Vec<Target>,
    source_addrs: u8,
    connect_timeout: Duration,
    /// Nothing of the run outlives it: viewers stop reading, agents stop waiting.
    hard_deadline: tokio::time::Instant,
    timelines: Vec<Timeline>,
    shared: Shared,
}

impl Plan {
    fn new(args: &Args, mode: Mode) -> anyhow::Result<Plan> {
        let hard_bound = Duration::from_secs_f64(args.duration + args.drain_timeout + 120.0);
        Ok(Plan {
            mode,
            streams: args.streams,
            viewers: args.viewers,
            rate: args.rate,
            run_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            targets: args.common.targets()?,
            source_addrs: args.common.source_addrs,
            connect_timeout: args.common.connect_timeout(),
            hard_deadline: tokio::time::Instant::now() + hard_bound,
            timelines: (0..args.streams).map(|_| Timeline::default()).collect(),
            shared: Shared::default(),
        })
    }

    fn project(&self, k: usize) -> String {
        crate::connect::project_id(&self.run_id, k, self.streams)
    }

    fn target(&self, i: usize) -> &Target {
        &self.targets[i % self.targets.len()]
    }
}

pub async fn run(args: Args, nofile: u64) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.streams > 0 && args.viewers > 0 && args.rate > 0.0 && args.duration > 0.0,
        "--streams, --viewers, --rate and --duration must be positive"
    );
    let modes: &[Mode] = match args.mode {
        Mode::Both => &[Mode::Streams, Mode::Publications],
        Mode::Streams => &[Mode::Streams],
        Mode::Publications => &[Mode::Publications],
    };
    let mut reports = Vec::new();
    for &mode in modes {
        let plan = Arc::new(Plan::new(&args, mode)?);
        let outcome = run_mode(&args, &plan).await?;
        reports.push(report(&args, nofile, &outcome));
    }
    if args.late_joiners > 0 && args.mode != Mode::Publications {
        let plan = Plan::new(&args, Mode::Streams)?;
        let outcome = late_joiners(&args, &plan).await;
        reports.push(late_report(&args, &outcome));
    }
    Ok(side_by_side(reports).print(args.common.json))
}

/// One mode: viewers, then agents in the measured window, the drain, the tally.
async fn run_mode(args: &Args, plan: &Arc<Plan>) -> anyhow::Result<Outcome> {
    let metrics_urls = args.common.metrics_urls(&plan.targets)?;
    let http = crate::http_client();
    let progress = progress_line(plan, args.common.quiet);
    let (stop_tx, stop_rx) = watch::channel(false);

    // 1. Viewers, all subscribed before the first start.
    let connect_started = Instant::now();
    let (viewers, connect_failures) = connect_viewers(plan, args.concurrency, stop_rx).await;
    let connect_seconds = connect_started.elapsed().as_secs_f64();

    // 2. Agents: the measured window.
    let window = report::Window::open(&http, &metrics_urls).await;
    let started = Instant::now();
    let mut agents = JoinSet::new();
    for k in 0..plan.streams {
        agents.spawn(agent(k, plan.clone(), started, Duration::from_secs_f64(args.duration)));
    }
    let agents = join_all(agents).await;
    let sending_seconds = started.elapsed().as_secs_f64();

    // 3. Drain, bounded; then the viewers stop.
    drain(plan, Duration::from_secs_f64(args.drain_timeout)).await;
    let measured = window.close(&http, &metrics_urls).await;
    let _ = stop_tx.send(true);
    let viewers = join_all(viewers).await;
    drop(progress);

    let mut latency = stats::histogram();
    for shard in &plan.shared.latency {
        if let Ok(shard) = shard.lock() {
            let _ = latency.add(&*shard);
        }
    }
    Ok(Outcome {
        mode: plan.mode,
        connect_seconds,
        connect_failures,
        sending_seconds,
        shown: plan.shared.shown.load(Relaxed),
        expected: plan.shared.expected.load(Relaxed),
        latency: stats::percentiles(&latency),
        tally: Tally::new(plan.mode, &agents, &viewers),
        measured,
    })
}

fn progress_line(plan: &Arc<Plan>, quiet: bool) -> Progress {
    let plan = plan.clone();
    Progress::start(quiet, move |elapsed| {
        let shared = &plan.shared;
        format!(
            "streams ({:?}) {elapsed:>5.0}s viewers {}/{} appends sent {} (agent errors {}) on screen {} of {} expected",
            plan.mode,
            shared.connected.load(Relaxed),
            plan.streams * plan.viewers,
            shared.sent.load(Relaxed),
            shared.agent_errors.load(Relaxed),
            shared.shown.load(Relaxed),
            shared.expected.load(Relaxed),
        )
    })
}

async fn join_all<T: 'static>(mut tasks: JoinSet<T>) -> Vec<T> {
    let mut results = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Ok(result) = result {
            results.push(result);
        }
    }
    results
}

/// Waits (at most `timeout`) until every append is on every viewer's screen and, for streams,
/// every viewer has seen its stream end.
async fn drain(plan: &Plan, timeout: Duration) {
    let shared = &plan.shared;
    let drain_end = Instant::now() + timeout;
    while Instant::now() < drain_end {
        let shown_all = shared.shown.load(Relaxed) >= shared.expected.load(Relaxed);
        let ended_all = plan.mode != Mode::Streams || shared.ended.load(Relaxed) >= shared.connected.load(Relaxed);
        if shown_all && ended_all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Viewers

/// A viewer's copy of one stream: its text, and how many of the agent's appends it has shown.
#[derive(Debug, Default)]
struct Screen {
    text: String,
    /// Appends (entries of the stream's [`Timeline`]) on screen.
    shown: usize,
    /// Frames whose `length` the copy already held (ignored, as the protocol says).
    repeats: u64,
    /// Frames that did not continue the copy (the previous length plus the text's bytes is not
    /// `length`).
    gaps: u64,
    snapshots: u64,
}

impl Screen {
    /// A `stream_append` frame.
    fn append(&mut self, text: &str, length: u64) {
        let have = self.text.len() as u64;
        if length <= have {
            self.repeats += 1;
            return;
        }
        if have + text.len() as u64 != length {
            self.gaps += 1;
        }
        self.text.push_str(text);
    }

    /// A `stream_snapshot` frame: the copy is replaced.
    fn snapshot(&mut self, text: String) {
        self.snapshots += 1;
        self.text = text;
    }

    /// The sends now on screen with a frame of `length`: every one ending at or before it that
    /// was not shown yet.
    fn newly_shown<'a>(&mut self, sends: &'a [(u64, u64)], length: u64) -> &'a [(u64, u64)] {
        let first = self.shown.min(sends.len());
        let more = sends[first..].iter().take_while(|&&(end, _)| end <= length).count();
        self.shown = first + more;
        &sends[first..self.shown]
    }
}

struct ViewerResult {
    stream: usize,
    /// Frames carrying tokens (`stream_append`, `stream_snapshot` or `message`) and their bytes.
    frames: u64,
    bytes: u64,
    /// Streams mode.
    screen: Screen,
    stream_ended: Option<String>,
    /// Publications mode: the tokens' numbers seen, and how many were seen twice.
    seen: SeqSet,
    duplicates: u64,
    other_frames: u64,
    /// Why the viewer stopped before the run did.
    failure: Option<String>,
}

/// The frames a viewer reads; `text` borrowed unless it holds escapes.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    length: Option<u64>,
    #[serde(default)]
    status: Option<&'a str>,
    #[serde(default)]
    data: Option<TokenData>,
}

/// A publication's data in publications mode; a stream frame's `data` (the agent's, none here)
/// leaves both fields empty.
#[derive(Deserialize)]
struct TokenData {
    #[serde(default)]
    sent_at_ns: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
}

/// Starts every viewer and waits until each is connected or has failed (bounded by the run's
/// deadline); the viewers then read until `stop`.
async fn connect_viewers(
    plan: &Arc<Plan>,
    concurrency: usize,
    stop: watch::Receiver<bool>,
) -> (JoinSet<ViewerResult>, Causes) {
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let mut viewers = JoinSet::new();
    for i in 0..plan.streams * plan.viewers {
        viewers.spawn(view(i, plan.clone(), limit.clone(), ready_tx.clone(), stop.clone()));
    }
    drop(ready_tx);
    let mut failures = Causes::new();
    while let Some(outcome) = tokio::time::timeout_at(plan.hard_deadline, ready_rx.recv()).await.ok().flatten() {
        if let Err(cause) = outcome {
            stats::bump(&mut failures, &cause, 1);
        }
    }
    (viewers, failures)
}

/// Viewer `i` of stream `i mod S`: connects (reporting on `ready`), then reads until `stop`.
async fn view(
    i: usize,
    plan: Arc<Plan>,
    limit: Arc<Semaphore>,
    ready: tokio::sync::mpsc::UnboundedSender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> ViewerResult {
    let k = i % plan.streams;
    let mut result = ViewerResult {
        stream: k,
        frames: 0,
        bytes: 0,
        screen: Screen::default(),
        stream_ended: None,
        seen: SeqSet::default(),
        duplicates: 0,
        other_frames: 0,
        failure: None,
    };
    let target = plan.target(i);
    let url = target.ws_url(Some(&plan.project(k)));
    let permit = limit.acquire_owned().await.ok();
    let opened = net::open(target, &url, net::source_addr(i, plan.source_addrs), plan.connect_timeout).await;
    drop(permit);
    let shared = &plan.shared;
    let mut ws = match opened {
        Ok(ws) => {
            shared.connected.fetch_add(1, Relaxed);
            let _ = ready.send(Ok(()));
            ws
        }
        Err(cause) => {
            let _ = ready.send(Err(cause.clone()));
            result.failure = Some(format!("connect_{cause}"));
            return result;
        }
    };
    drop(ready);
    let latency = &shared.latency[i % LATENCY_SHARDS];
    let timeline = &plan.timelines[k];
    let stopped = stop.wait_for(|stopped| *stopped);
    let deadline = tokio::time::sleep_until(plan.hard_deadline);
    tokio::pin!(stopped, deadline);
    loop {
        let frame = tokio::select! {
            biased;
            frame = ws.next() => frame,
            _ = &mut stopped => break,
            () = &mut deadline => break,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                result.failure = Some(format!("closed_{}", net::close_code(&Message::Close(frame))));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                result.failure = Some(net::ws_cause("viewer", &error));
                break;
            }
            None => {
                result.failure = Some("viewer_eof".into());
                break;
            }
        };
        let now = stats::now_ns();
        let Ok(incoming) = serde_json::from_str::<Incoming>(&text) else {
            result.other_frames += 1;
            continue;
        };
        let record = |sent_at_ns: u64| {
            if let Ok(mut latency) = latency.lock() {
                stats::record(&mut latency, now.saturating_sub(sent_at_ns) / 1000);
            }
        };
        match (plan.mode, incoming) {
            (
                Mode::Publications,
                Incoming {
                    kind: "message",
                    data: Some(TokenData { sent_at_ns: Some(sent_at_ns), seq: Some(seq) }),
                    ..
                },
            ) => {
                result.frames += 1;
                result.bytes += text.len() as u64;
                if result.seen.insert(seq) {
                    shared.shown.fetch_add(1, Relaxed);
                    record(sent_at_ns);
                } else {
                    result.duplicates += 1;
                }
            }
            (
                Mode::Streams,
                Incoming {
                    kind: kind @ ("stream_append" | "stream_snapshot"),
                    text: Some(body),
                    length: Some(length),
                    ..
                },
            ) => {
                result.frames += 1;
                result.bytes += text.len() as u64;
                if kind == "stream_append" {
                    result.screen.append(&body, length);
                } else {
                    result.screen.snapshot(body.into_owned());
                }
                let sends = timeline.sends.read().unwrap_or_else(|poisoned| poisoned.into_inner());
                let shown = result.screen.newly_shown(&sends, length);
                shared.shown.fetch_add(shown.len() as u64, Relaxed);
                shown.iter().for_each(|&(_, sent_at_ns)| record(sent_at_ns));
            }
            (Mode::Streams, Incoming { kind: "stream_ended", status, .. }) => {
                result.stream_ended = Some(status.unwrap_or("none").to_owned());
                shared.ended.fetch_add(1, Relaxed);
            }
            _ => result.other_frames += 1,
        }
    }
    if result.failure.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = ws.send(Message::Close(None)).await;
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Agents

struct AgentResult {
    stream: usize,
    /// Appends (or publications) sent.
    sent: u64,
    /// Streams mode: the text sent.
    text: String,
    /// Publications mode: the confirmed tokens' numbers.
    confirmed: SeqSet,
    errors: Causes,
}

/// What an agent reads back: answers to its start, end and publications, and refusals.
#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    request_id: Option<Value>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    stream_id: Option<String>,
}

type Sink = SplitSink<Ws, Message>;
type Source = SplitStream<Ws>;

/// The agent of stream `k`: starts its stream (streams mode), sends a token every 1/R s for
/// `duration` (the streams staggered over the first interval), ends the stream and waits for
/// the answers.
async fn agent(k: usize, plan: Arc<Plan>, started: Instant, duration: Duration) -> AgentResult {
    let mut result =
        AgentResult { stream: k, sent: 0, text: String::new(), confirmed: SeqSet::default(), errors: Causes::new() };
    let target = plan.target(k);
    let ws = match net::open(target, &target.ws_url(None), None, plan.connect_timeout).await {
        Ok(ws) => ws,
        Err(cause) => {
            fail(&plan, &mut result.errors, &format!("agent_connect_{cause}"));
            return result;
        }
    };
    let (mut sink, mut source) = ws.split();
    let project = plan.project(k);
    let stream_id = match plan.mode {
        Mode::Streams => match start_stream(&mut sink, &mut source, &project, plan.hard_deadline).await {
            Ok(stream_id) => Some(stream_id),
            Err(cause) => {
                fail(&plan, &mut result.errors, &cause);
                return result;
            }
        },
        _ => None,
    };
    let (sent_tx, sent_rx) = watch::channel(None);
    let reader = tokio::spawn(read_answers(plan.clone(), source, sent_rx));
    let end = started + duration;
    let mut length = 0u64;
    for n in 0u64.. {
        let at = started + Duration::from_secs_f64((n as f64 + k as f64 / plan.streams as f64) / plan.rate);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let token = token(k, n);
        let sent_at_ns = stats::now_ns();
        let frame = match &stream_id {
            Some(stream_id) => {
                let offset = length;
                length += token.len() as u64;
                plan.timelines[k].push(length, sent_at_ns);
                result.text.push_str(token);
                json!({"action": "stream_append", "project_id": project, "stream_id": stream_id, "text": token, "at": offset})
            }
            None => json!({"action": "publish", "project_id": project, "type": "token",
                           "data": {"text": token, "sent_at_ns": sent_at_ns, "seq": n}, "request_id": n}),
        };
        if sink.send(Message::text(frame.to_string())).await.is_err() {
            fail(&plan, &mut result.errors, "agent_send_failed");
            break;
        }
        result.sent += 1;
        plan.shared.sent.fetch_add(1, Relaxed);
        if stream_id.is_some() {
            plan.shared.expected.fetch_add(plan.viewers as u64, Relaxed);
        }
    }
    if let Some(stream_id) = &stream_id {
        let end = json!({"action": "stream_end", "project_id": project, "stream_id": stream_id,
                         "status": "completed", "request_id": "end"});
        if sink.send(Message::text(end.to_string())).await.is_err() {
            fail(&plan, &mut result.errors, "agent_send_failed");
        }
    }
    let _ = sent_tx.send(Some(result.sent));
    if let Ok(answers) = reader.await {
        stats::merge(&mut result.errors, &answers.errors);
        result.confirmed = answers.confirmed;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(None))).await;
    result
}

/// Counts an agent's failure (its cause, and in the progress line).
fn fail(plan: &Plan, errors: &mut Causes, cause: &str) {
    stats::bump(errors, cause, 1);
    plan.shared.agent_errors.fetch_add(1, Relaxed);
}

/// Sends `stream_start` and waits for its answer: the server's stream id, or a cause.
async fn start_stream(
    sink: &mut Sink,
    source: &mut Source,
    project: &str,
    hard_deadline: tokio::time::Instant,
) -> Result<String, String> {
    let start = json!({"action": "stream_start", "project_id": project, "agent": "dev", "event": "answer",
                       "request_id": "start"});
    sink.send(Message::text(start.to_string())).await.map_err(|_| "agent_send_failed".to_owned())?;
    let deadline = hard_deadline.min(tokio::time::Instant::now() + ANSWER_TIMEOUT);
    loop {
        let frame =
            tokio::time::timeout_at(deadline, source.next()).await.map_err(|_| "start_unanswered".to_owned())?;
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            _ => return Err("agent_connection_lost".into()),
        };
        let Ok(reply) = serde_json::from_str::<Reply>(&text) else { continue };
        if reply.request_id.as_ref().and_then(Value::as_str) != Some("start") {
            continue;
        }
        return match (reply.kind.as_str(), reply.stream_id) {
            ("stream_started", Some(stream_id)) => Ok(stream_id),
            _ => Err(format!("start_{}", reply.code.unwrap_or(reply.kind))),
        };
    }
}

/// What an agent's reader gathered.
struct Answers {
    confirmed: SeqSet,
    errors: Causes,
}

/// Reads an agent's answers until it has them all: every publication's (publications mode), or
/// its end's (streams mode; appends are answered only when refused, and before the end is).
/// `sent` gets the number sent when the agent is done. Bounded by the run's deadline.
async fn read_answers(plan: Arc<Plan>, mut source: Source, mut sent: watch::Receiver<Option<u64>>) -> Answers {
    let mut answers = Answers { confirmed: SeqSet::default(), errors: Causes::new() };
    let mut answered = 0u64;
    let mut ended = false;
    loop {
        let done = match (plan.mode, *sent.borrow()) {
            (Mode::Streams, Some(_)) => ended,
            (_, Some(sent)) => answered >= sent,
            (_, None) => false,
        };
        if done {
            break;
        }
        let frame = tokio::select! {
            frame = source.next() => frame,
            _ = sent.changed() => continue,
            () = tokio::time::sleep_until(plan.hard_deadline) => {
                fail(&plan, &mut answers.errors, "agent_unanswered");
                break;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            _ => {
                fail(&plan, &mut answers.errors, "agent_connection_lost");
                break;
            }
        };
        let Ok(reply) = serde_json::from_str::<Reply>(&text) else { continue };
        match (reply.kind.as_str(), &reply.request_id) {
            ("publish_confirmed", Some(id)) => {
                answered += 1;
                if let Some(seq) = id.as_u64() {
                    answers.confirmed.insert(seq);
                    plan.shared.expected.fetch_add(plan.viewers as u64, Relaxed);
                }
            }
            ("stream_ended", Some(id)) if id.as_str() == Some("end") => ended = true,
            (kind, id) => {
                answered += u64::from(id.is_some());
                ended |= id.as_ref().and_then(Value::as_str) == Some("end");
                fail(&plan, &mut answers.errors, &format!("agent_{}", reply.code.as_deref().unwrap_or(kind)));
            }
        }
    }
    answers
}

// ---------------------------------------------------------------------------------------------
// The tally and the report

/// What the agents sent set against what each viewer showed.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    agent_errors: Causes,
    frames: u64,
    bytes: u64,
    /// Streams: viewers whose text is not their agent's; publications: viewers with a token
    /// missing.
    viewers_wrong: u64,
    /// Publications: confirmed tokens a viewer never got; streams: appends never on screen.
    lost: u64,
    duplicates: u64,
    gaps: u64,
    snapshots: u64,
    /// Streams: viewers that did not see their stream end `completed`.
    not_ended: u64,
    other_frames: u64,
    viewer_failures: Causes,
}

impl Tally {
    fn new(mode: Mode, agents: &[AgentResult], viewers: &[ViewerResult]) -> Tally {
        let mut tally = Tally::default();
        let mut by_stream: Vec<Option<&AgentResult>> = Vec::new();
        for agent in agents {
            tally.sent += agent.sent;
            stats::merge(&mut tally.agent_errors, &agent.errors);
            if by_stream.len() <= agent.stream {
                by_stream.resize(agent.stream + 1, None);
            }
            by_stream[agent.stream] = Some(agent);
        }
        for viewer in viewers {
            tally.frames += viewer.frames;
            tally.bytes += viewer.bytes;
            tally.other_frames += viewer.other_frames;
            if let Some(cause) = &viewer.failure {
                stats::bump(&mut tally.viewer_failures, cause, 1);
            }
            let Some(agent) = by_stream.get(viewer.stream).copied().flatten() else { continue };
            match mode {
                Mode::Streams => {
                    let screen = &viewer.screen;
                    tally.viewers_wrong += u64::from(screen.text != agent.text);
                    tally.lost += agent.sent.saturating_sub(screen.shown as u64);
                    tally.duplicates += screen.repeats;
                    tally.gaps += screen.gaps;
                    tally.snapshots += screen.snapshots;
                    tally.not_ended += u64::from(viewer.stream_ended.as_deref() != Some("completed"));
                }
                _ => {
                    let missing = agent.confirmed.missing_from(&viewer.seen) + viewer.seen.extra_over(&agent.confirmed);
                    tally.lost += missing;
                    tally.viewers_wrong += u64::from(missing > 0);
                    tally.duplicates += viewer.duplicates;
                }
            }
        }
        tally
    }

    /// Nothing lost, doubled, refused or out of place.
    fn ok(&self) -> bool {
        self.sent > 0
            && self.agent_errors.is_empty()
            && self.viewer_failures.is_empty()
            && self.viewers_wrong == 0
            && self.lost == 0
            && self.duplicates == 0
            && self.gaps == 0
            && self.not_ended == 0
    }
}

/// Everything one mode's run measured.
struct Outcome {
    mode: Mode,
    connect_seconds: f64,
    connect_failures: Causes,
    sending_seconds: f64,
    shown: u64,
    expected: u64,
    latency: stats::Percentiles,
    tally: Tally,
    measured: report::Measured,
}

/// The gateway's rollup counters (issue 25's metrics).
const APPENDS_DELIVERED: &str = "agenticai_ws_stream_appends_delivered_total";
const ROLLUPS: &str = "agenticai_ws_stream_rollups_total";

fn report(args: &Args, nofile: u64, outcome: &Outcome) -> Report {
    let Outcome { tally, measured, .. } = outcome;
    let viewers = (args.streams * args.viewers) as f64;
    let per_viewer_second = |count: u64| report::per_second(count, outcome.sending_seconds) / viewers;
    let frames_per_viewer_s = per_viewer_second(tally.frames);
    let bytes_per_viewer_s = per_viewer_second(tally.bytes);
    let server_cpu = measured.server_cpu();
    let cpu_us_per_append = (tally.sent > 0).then(|| server_cpu * 1e6 / tally.sent as f64);
    let rollups = measured.delta(ROLLUPS);
    let rollup_ratio = (rollups > 0.0).then(|| measured.delta(APPENDS_DELIVERED) / rollups);
    let ok = outcome.connect_failures.is_empty() && tally.ok();
    let mode = format!("{:?}", outcome.mode).to_lowercase();
    let value = json!({
        "scenario": "streams",
        "mode": mode,
        "ok": ok,
        "streams": args.streams,
        "viewers_per_stream": args.viewers,
        "target_rate_per_stream": args.rate,
        "duration": args.duration,
        "nofile_limit": nofile,
        "viewer_connect_seconds": outcome.connect_seconds,
        "viewer_connect_failures": outcome.connect_failures,
        "appends": tally.sent,
        "appends_per_s": report::per_second(tally.sent, outcome.sending_seconds),
        "agent_errors": tally.agent_errors,
        "frames_per_viewer_per_s": frames_per_viewer_s,
        "bytes_per_viewer_per_s": bytes_per_viewer_s,
        "append_to_screen": outcome.latency,
        "on_screen": outcome.shown,
        "expected_on_screen": outcome.expected,
        "viewers_wrong": tally.viewers_wrong,
        "lost": tally.lost,
        "duplicates": tally.duplicates,
        "gaps": tally.gaps,
        "snapshots": tally.snapshots,
        "viewers_without_end": tally.not_ended,
        "other_frames": tally.other_frames,
        "viewer_failures": tally.viewer_failures,
        "machine": measured.machine,
        "server": {
            "metrics_ok": measured.metrics_ok(),
            "cpu_seconds": server_cpu,
            "cpu_us_per_append": cpu_us_per_append,
            "rollup_ratio": rollup_ratio,
            "deliveries": measured.delta(scrape::DELIVERIES),
        },
    });
    let correctness = match outcome.mode {
        Mode::Streams => format!(
            "viewers with a text not the agent's {}, appends never on screen {}, repeats {}, gaps {}, snapshots {}, viewers without a completed end {}",
            tally.viewers_wrong, tally.lost, tally.duplicates, tally.gaps, tally.snapshots, tally.not_ended
        ),
        _ => format!(
            "viewers missing a token {}, tokens lost {}, duplicated {}",
            tally.viewers_wrong, tally.lost, tally.duplicates
        ),
    };
    let human = format!(
        "streams --as {mode}: {} streams x {} viewers, {} appends in {:.2}s ({:.0}/s, target {:.0}/s), agent errors: {}\n\
         per viewer: {frames_per_viewer_s:.1} frames/s, {bytes_per_viewer_s:.0} bytes/s\n\
         append-to-screen: {}\n\
         {correctness}, viewer failures: {}, connect failures: {}\n\
         server: CPU {} = {} per append, rollup ratio {}\n\
         {}",
        args.streams,
        args.viewers,
        tally.sent,
        outcome.sending_seconds,
        report::per_second(tally.sent, outcome.sending_seconds),
        args.rate * args.streams as f64,
        stats::causes_line(&tally.agent_errors),
        outcome.latency.line(),
        stats::causes_line(&tally.viewer_failures),
        stats::causes_line(&outcome.connect_failures),
        scrape::cpu_text(server_cpu),
        report::or_unknown(cpu_us_per_append, |us| format!("{us:.2} us")),
        report::or_unknown(rollup_ratio, |ratio| format!("{ratio:.1} appends per frame")),
        measured.machine_line(),
    );
    Report { ok, value, human }
}

/// The reports of one invocation as one: every part must pass; with both modes, a last line
/// sets their CPU per append and frames per viewer side by side.
fn side_by_side(reports: Vec<Report>) -> Report {
    let figure = |mode: &str, pointer: &str| {
        reports
            .iter()
            .find(|report| report.value["mode"] == mode)
            .and_then(|report| report.value.pointer(pointer))
            .and_then(Value::as_f64)
    };
    let ratio = |pointer: &str| Some(figure("publications", pointer)? / figure("streams", pointer)?);
    let cpu_ratio = ratio("/server/cpu_us_per_append");
    let frames_ratio = ratio("/frames_per_viewer_per_s");
    let ok = reports.iter().all(|report| report.ok);
    let mut human: Vec<String> = reports.iter().map(|report| report.human.clone()).collect();
    if let (Some(cpu), Some(frames)) = (cpu_ratio, frames_ratio) {
        human.push(format!(
            "side by side: streams take {cpu:.1}x less server CPU per append and {frames:.1}x fewer frames per viewer than publications"
        ));
    }
    let value = json!({
        "scenario": "streams",
        "ok": ok,
        "runs": reports.iter().map(|report| report.value.clone()).collect::<Vec<_>>(),
        "cpu_ratio_publications_to_streams": cpu_ratio,
        "frames_ratio_publications_to_streams": frames_ratio,
    });
    Report { ok, value, human: human.join("\n") }
}

// ---------------------------------------------------------------------------------------------
// Late joiners

/// Bytes of one append while the late joiners' stream is filled (well under MAX_FRAME_BYTES).
const FILL_CHUNK_BYTES: usize = 8 * 1024;

/// How long a late joiner follows the live appends after its snapshot.
const FOLLOW_AFTER_SNAPSHOT: Duration = Duration::from_millis(300);

/// The late joiners' run.
struct LateOutcome {
    /// The stream's length when the first joiner subscribed.
    filled_bytes: u64,
    joined: u64,
    /// Subscribe sent to `stream_snapshot` received, for each joiner.
    latency: Histogram<u64>,
    /// Joiners whose snapshot, or the appends after it, were not the agent's text.
    wrong: u64,
    /// Live appends the joiners got after their snapshots (they show the seam was crossed).
    followed_frames: u64,
    failures: Causes,
}

/// The late joiners' stream's agent: its connection and the text it sent, shared with the joiners.
struct LateAgent {
    project: String,
    stream_id: String,
    text: Arc<Mutex<String>>,
}

async fn late_joiners(args: &Args, plan: &Plan) -> LateOutcome {
    let mut outcome = LateOutcome {
        filled_bytes: 0,
        joined: 0,
        latency: stats::histogram(),
        wrong: 0,
        followed_frames: 0,
        failures: Causes::new(),
    };
    let target = plan.target(0).clone();
    let ws = match net::open(&target, &target.ws_url(None), None, plan.connect_timeout).await {
        Ok(ws) => ws,
        Err(cause) => {
            stats::bump(&mut outcome.failures, &format!("agent_connect_{cause}"), 1);
            return outcome;
        }
    };
    let (mut sink, mut source) = ws.split();
    let project = format!("lt-{}-late", plan.run_id);
    let agent = match fill(&mut sink, &mut source, &project, args.snapshot_bytes, plan.hard_deadline).await {
        Ok((stream_id, text)) => LateAgent { project, stream_id, text: Arc::new(Mutex::new(text)) },
        Err(cause) => {
            stats::bump(&mut outcome.failures, &cause, 1);
            return outcome;
        }
    };
    outcome.filled_bytes = lock(&agent.text).len() as u64;

    // The agent goes on appending tokens while the joiners come; refusals end it.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let appender = {
        let (project, stream_id, text) = (agent.project.clone(), agent.stream_id.clone(), agent.text.clone());
        let (rate, hard_deadline) = (args.rate, plan.hard_deadline);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            for n in 0u64.. {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop_rx.wait_for(|stopped| *stopped) => break,
                    () = tokio::time::sleep_until(hard_deadline) => break,
                }
                let token = token(0, n);
                let at = {
                    let mut text = lock(&text);
                    let at = text.len();
                    text.push_str(token);
                    at
                };
                let append = json!({"action": "stream_append", "project_id": project, "stream_id": stream_id,
                                    "text": token, "at": at});
                if sink.send(Message::text(append.to_string())).await.is_err() {
                    break;
                }
            }
            sink
        })
    };
    for _ in 0..args.late_joiners {
        match join_late(&target, plan, &agent).await {
            Ok(joined) => {
                outcome.joined += 1;
                stats::record(&mut outcome.latency, joined.snapshot_after.as_micros() as u64);
                outcome.wrong += u64::from(!joined.exact);
                outcome.followed_frames += joined.followed_frames;
            }
            Err(cause) => stats::bump(&mut outcome.failures, &cause, 1),
        }
    }
    let _ = stop_tx.send(true);
    if let Ok(mut sink) = appender.await {
        let end = json!({"action": "stream_end", "project_id": agent.project, "stream_id": agent.stream_id,
                         "status": "completed"});
        let _ = sink.send(Message::text(end.to_string())).await;
        // A refused append is answered before the end: every frame back to the agent by now is one.
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_millis(500), source.next()).await {
            if let Message::Text(text) = frame {
                if let Ok(reply) = serde_json::from_str::<Reply>(&text) {
                    if reply.kind != "stream_ended" {
                        stats::bump(&mut outcome.failures, &format!("agent_{}", reply.code.unwrap_or(reply.kind)), 1);
                    }
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(None))).await;
    }
    outcome
}

fn lock(text: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    text.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the late joiners' stream and appends chunks (each answered before the next) until it
/// holds `bytes`: its id and text, or a cause.
async fn fill(
    sink: &mut Sink,
    source: &mut Source,
    project: &str,
    bytes: usize,
    hard_deadline: tokio::time::Instant,
) -> Result<(String, String), String> {
    let stream_id = start_stream(sink, source, project, hard_deadline).await?;
    let mut chunk = String::new();
    for n in 0u64.. {
        if chunk.len() >= FILL_CHUNK_BYTES {
            break;
        }
        chunk.push_str(token(1, n));
    }
    let mut text = String::with_capacity(bytes + chunk.len());
    while text.len() < bytes {
        let append = json!({"action": "stream_append", "project_id": project, "stream_id": stream_id,
                            "text": chunk, "at": text.len(), "request_id": "fill"});
        sink.send(Message::text(append.to_string())).await.map_err(|_| "agent_send_failed".to_owned())?;
        let deadline = hard_deadline.min(tokio::time::Instant::now() + ANSWER_TIMEOUT);
        loop {
            let frame =
                tokio::time::timeout_at(deadline, source.next()).await.map_err(|_| "fill_unanswered".to_owned())?;
            let Some(Ok(Message::Text(reply))) = frame else { return Err("agent_connection_lost".into()) };
            let Ok(reply) = serde_json::from_str::<Reply>(&reply) else { continue };
            match reply.kind.as_str() {
                "stream_appended" => break,
                kind => return Err(format!("fill_{}", reply.code.as_deref().unwrap_or(kind))),
            }
        }
        text.push_str(&chunk);
    }
    Ok((stream_id, text))
}

/// One late joiner's result.
struct Joined {
    snapshot_after: Duration,
    /// The snapshot and the appends after it are the agent's text.
    exact: bool,
    followed_frames: u64,
}

/// Connects, subscribes, times the snapshot, follows the live appends for a moment and checks
/// the copy against the agent's text.
async fn join_late(target: &Target, plan: &Plan, agent: &LateAgent) -> Result<Joined, String> {
    let mut ws = net::open(target, &target.ws_url(None), None, plan.connect_timeout)
        .await
        .map_err(|c| format!("joiner_connect_{c}"))?;
    let subscribe = json!({"action": "subscribe", "project_id": agent.project});
    let subscribed_at = Instant::now();
    ws.send(Message::text(subscribe.to_string())).await.map_err(|_| "joiner_send_failed".to_owned())?;
    let mut screen = Screen::default();
    let snapshot_after = loop {
        let deadline = plan.hard_deadline.min(tokio::time::Instant::now() + ANSWER_TIMEOUT);
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.map_err(|_| "joiner_no_snapshot".to_owned())?;
        let Some(Ok(Message::Text(text))) = frame else { return Err("joiner_connection_lost".into()) };
        let received = subscribed_at.elapsed();
        if let Ok(Incoming { kind: "stream_snapshot", text: Some(body), .. }) = serde_json::from_str(&text) {
            screen.snapshot(body.into_owned());
            break received;
        }
    };
    let follow_end = tokio::time::Instant::now() + FOLLOW_AFTER_SNAPSHOT;
    let mut followed_frames = 0;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(follow_end, ws.next()).await {
        let Message::Text(text) = frame else { continue };
        if let Ok(Incoming { kind: "stream_append", text: Some(body), length: Some(length), .. }) =
            serde_json::from_str(&text)
        {
            screen.append(&body, length);
            followed_frames += 1;
        }
    }
    let exact = screen.gaps == 0 && screen.repeats == 0 && lock(&agent.text).starts_with(screen.text.as_str());
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.send(Message::Close(None))).await;
    Ok(Joined { snapshot_after, exact, followed_frames })
}

fn late_report(args: &Args, outcome: &LateOutcome) -> Report {
    let latency = stats::percentiles(&outcome.latency);
    let ok = outcome.failures.is_empty() && outcome.wrong == 0 && outcome.joined == args.late_joiners as u64;
    // The rollup bounds this (1000/STREAM_ROLLUP_MS + 1 a second) whatever the agent's rate.
    let followed_frames_per_s =
        report::per_second(outcome.followed_frames, outcome.joined as f64 * FOLLOW_AFTER_SNAPSHOT.as_secs_f64());
    let value = json!({
        "scenario": "streams",
        "mode": "late_joiners",
        "ok": ok,
        "late_joiners": args.late_joiners,
        "snapshot_bytes": outcome.filled_bytes,
        "joined": outcome.joined,
        "subscribe_to_snapshot": latency,
        "wrong": outcome.wrong,
        "followed_frames": outcome.followed_frames,
        "followed_frames_per_s": followed_frames_per_s,
        "failures": outcome.failures,
    });
    let human = format!(
        "late joiners: {} of {} joined a stream of {} bytes; subscribe to snapshot: {}\n\
         joiners whose snapshot and the appends after it were not the agent's text {}, live frames after the snapshots {} ({followed_frames_per_s:.1}/s per joiner), failures: {}",
        outcome.joined,
        args.late_joiners,
        outcome.filled_bytes,
        latency.line(),
        outcome.wrong,
        outcome.followed_frames,
        stats::causes_line(&outcome.failures),
    );
    Report { ok, value, human }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_4_to_8_bytes() {
        for token in TOKENS {
            assert!((4..=8).contains(&token.len()), "{token:?} is {} bytes", token.len());
        }
    }

    #[test]
    fn a_frame_shows_every_append_up_to_its_length_once() {
        let sends = [(4, 100), (10, 200), (16, 300)];
        let mut screen = Screen::default();
        screen.append(" the", 4);
        assert_eq!(screen.newly_shown(&sends, 4), &[(4, 100)]);
        screen.append(" testsnaïve", 16);
        assert_eq!(screen.newly_shown(&sends, 16), &[(10, 200), (16, 300)], "ï is 2 bytes");
        screen.append(" the", 4);
        assert_eq!(screen.newly_shown(&sends, 4), &[] as &[(u64, u64)], "a repeat shows nothing");
        assert_eq!((screen.text.as_str(), screen.repeats, screen.gaps), (" the testsnaïve", 1, 0));
    }

    #[test]
    fn a_frame_that_skips_bytes_is_a_gap_and_a_snapshot_replaces_the_copy() {
        let mut screen = Screen::default();
        screen.append("ab", 2);
        screen.append("d", 4);
        assert_eq!(screen.gaps, 1);
        screen.snapshot("abcd".into());
        assert_eq!((screen.text.as_str(), screen.snapshots), ("abcd", 1));
        screen.append("e", 5);
        assert_eq!((screen.text.as_str(), screen.gaps), ("abcde", 1));
    }

    fn viewer(stream: usize, text: &str, shown: usize, ended: Option<&str>) -> ViewerResult {
        ViewerResult {
            stream,
            frames: 3,
            bytes: 300,
            screen: Screen { text: text.into(), shown, ..Screen::default() },
            stream_ended: ended.map(str::to_owned),
            seen: SeqSet::default(),
            duplicates: 0,
            other_frames: 0,
            failure: None,
        }
    }

    #[test]
    fn the_streams_tally_compares_each_viewer_with_its_agent() {
        let agents = [
            AgentResult { stream: 1, sent: 2, text: "xy".into(), confirmed: SeqSet::default(), errors: Causes::new() },
            AgentResult { stream: 0, sent: 2, text: "ab".into(), confirmed: SeqSet::default(), errors: Causes::new() },
        ];
        let good = [viewer(0, "ab", 2, Some("completed")), viewer(1, "xy", 2, Some("completed"))];
        let tally = Tally::new(Mode::Streams, &agents, &good);
        assert!(tally.ok(), "{tally:?}");
        assert_eq!((tally.sent, tally.frames, tally.bytes), (4, 6, 600));
        let bad = [viewer(0, "xy", 2, Some("completed")), viewer(1, "x", 1, None)];
        let tally = Tally::new(Mode::Streams, &agents, &bad);
        assert!(!tally.ok());
        assert_eq!((tally.viewers_wrong, tally.lost, tally.not_ended), (2, 1, 1));
    }

    #[test]
    fn the_publications_tally_finds_lost_and_doubled_tokens() {
        let mut confirmed = SeqSet::default();
        (0..3).for_each(|seq| _ = confirmed.insert(seq));
        let agents = [AgentResult { stream: 0, sent: 3, text: String::new(), confirmed, errors: Causes::new() }];
        let mut seen = SeqSet::default();
        seen.insert(0);
        seen.insert(2);
        let viewers = [ViewerResult { seen, duplicates: 1, ..viewer(0, "", 0, None) }];
        let tally = Tally::new(Mode::Publications, &agents, &viewers);
        assert_eq!((tally.lost, tally.duplicates, tally.viewers_wrong, tally.not_ended), (1, 1, 1, 0));
        assert!(!tally.ok());
    }

    #[test]
    fn side_by_side_sets_cpu_and_frames_of_both_modes_against_each_other() {
        let cli = crate::tests::parse(&["streams", "--url", "ws://127.0.0.1:1/ws", "--streams", "2", "--viewers", "5"])
            .expect("valid arguments");
        let crate::Command::Streams(args) = cli.command else { panic!("not streams") };
        assert_eq!((args.rate, args.mode, args.late_joiners), (150.0, Mode::Streams, 0), "defaults");
        let outcome = |mode, cpu_after, frames| Outcome {
            mode,
            connect_seconds: 0.1,
            connect_failures: Causes::new(),
            sending_seconds: 2.0,
            shown: 100,
            expected: 100,
            latency: stats::Percentiles::default(),
            tally: Tally { sent: 500, frames, bytes: frames * 100, ..Tally::default() },
            measured: report::tests::measured_for_test(&[(scrape::CPU, 10.0)], &[(scrape::CPU, cpu_after)]),
        };
        let streams = report(&args, 1024, &outcome(Mode::Streams, 10.001, 520));
        let publications = report(&args, 1024, &outcome(Mode::Publications, 10.01, 5000));
        assert_eq!(streams.value["frames_per_viewer_per_s"], 26.0);
        let per_append = streams.value["server"]["cpu_us_per_append"].as_f64().expect("a figure");
        assert!((per_append - 2.0).abs() < 1e-6, "{per_append}");
        let both = side_by_side(vec![streams, publications]);
        assert!(both.ok);
        let cpu = both.value["cpu_ratio_publications_to_streams"].as_f64().expect("a ratio");
        assert!((cpu - 10.0).abs() < 1e-6, "{cpu}");
        assert!(
            both.human.ends_with("10.0x less server CPU per append and 9.6x fewer frames per viewer than publications"),
            "{}",
            both.human
        );
    }

    #[test]
    fn the_late_joiners_report_fails_when_one_did_not_join() {
        let cli = crate::tests::parse(&["streams", "--url", "ws://127.0.0.1:1/ws", "--late-joiners", "3"])
            .expect("valid arguments");
        let crate::Command::Streams(args) = cli.command else { panic!("not streams") };
        assert_eq!(args.snapshot_bytes, 500 * 1024, "default");
        let mut latency = stats::histogram();
        [2_000, 3_000].iter().for_each(|&micros| stats::record(&mut latency, micros));
        let mut failures = Causes::new();
        stats::bump(&mut failures, "joiner_no_snapshot", 1);
        let outcome =
            LateOutcome { filled_bytes: 512_000, joined: 2, latency, wrong: 0, followed_frames: 15, failures };
        let report = late_report(&args, &outcome);
        assert!(!report.ok);
        assert_eq!(report.value["followed_frames_per_s"], 25.0);
        assert_eq!(report.value["subscribe_to_snapshot"]["count"], 2);
        assert!(report.human.starts_with("late joiners: 2 of 3 joined a stream of 512000 bytes"), "{}", report.human);
    }
}
