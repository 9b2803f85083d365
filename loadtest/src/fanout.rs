//! `fanout`: S subscribers over K projects (subscriber i on project i mod K), P publishers
//! publishing at a target rate through the publish API (HTTP) or the WebSocket `publish` action.
//!
//! Every publication carries `{"sent_at_ns","seq","publisher"}`: its send time (the system clock,
//! shared by every process on this machine) and its number in its (publisher, project) stream.
//! Subscribers compute the delivery latency into HDR histograms shared by groups of subscribers
//! (one per subscriber would be 10,000 histograms of 160 KiB each: cold memory on every record,
//! which made the generator, not the server, the bottleneck) and mark each number in a
//! bitset per publisher: a number marked twice is a duplicate, a confirmed publication a
//! subscriber never marked is lost. The server's `/metrics` before and after give its CPU seconds
//! per delivery.
//!
//! Against Nchan (`--server nchan`, HTTP publishers only) subscribers connect to /sub/{project},
//! publications are posted to /pub/{project} with the same body, and arrive as that body (no
//! `{"type":"message",...}` envelope); its CPU comes from /proc of the `--server-pid`s and, with
//! no delivery count of its own, is divided by the deliveries the subscribers counted.

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::{
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    net::{self, Target},
    report::{self, Report},
    scrape,
    server::{Server, ServerArgs},
    stats::{self, Causes, SeqSet},
    Common, Progress,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// POST /api/v1/publish
    Http,
    /// The WebSocket `publish` action, one connection per publisher.
    Ws,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Subscriber connections (subscriber i on project i mod K).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Projects.
    #[arg(long, default_value_t = 10)]
    pub projects: usize,
    /// Publisher tasks (each with its own sequence numbers).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Publications per second over all publishers.
    #[arg(long, default_value_t = 1500.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// At most this many publications in all (0: rate x duration).
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// How publishers publish.
    #[arg(long, value_enum, default_value_t = Via::Http)]
    pub via: Via,
    /// Publications one publisher may have unanswered at once.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Extra bytes of padding in each publication's data.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Seconds to wait after the last publication for the deliveries still under way.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Subscriber connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The `type` of every publication of a run (the check messages of `connect` have their own).
const PUBLICATION_TYPE: &str = "loadtest";

/// Sends a publish `request` (see [`Server::publish_request`]); the `subscribers` the server
/// reports, or a cause.
pub async fn http_publish(mut request: reqwest::RequestBuilder, key: Option<&str>) -> Result<u64, String> {
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            "http_timeout".to_owned()
        } else if e.is_connect() {
            "http_connect".to_owned()
        } else {
            // The innermost cause, shortened ("connection closed before message completed", ...).
            let mut cause: &dyn std::error::Error = &e;
            while let Some(source) = cause.source() {
                cause = source;
            }
            let text: String = cause.to_string().chars().take(60).collect();
            format!("http_error: {text}")
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("http_{}", status.as_u16()));
    }
    let value: Value = response.json().await.map_err(|_| "http_bad_body".to_owned())?;
    Ok(value.get("subscribers").and_then(Value::as_u64).unwrap_or(0))
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    data: Option<Stamp>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Stamp {
    sent_at_ns: u64,
    seq: u64,
    publisher: usize,
}

/// The stamp of a delivered publication, in the envelope `server` delivers it in; None for any
/// other frame.
fn delivered_stamp(server: Server, text: &str) -> Option<Stamp> {
    let incoming: Incoming = serde_json::from_str(text).ok()?;
    (incoming.kind == server.delivery_type(PUBLICATION_TYPE)).then_some(incoming.data).flatten()
}

/// Subscribers sharing one delivery-latency histogram.
const LATENCY_SHARDS: usize = 16;

struct Shared {
    /// Delivery latency; subscriber i records into shard i mod LATENCY_SHARDS.
    latency: Vec<Mutex<Histogram<u64>>>,
    connected: AtomicU64,
    received: AtomicU64,
    unique: AtomicU64,
    expected: AtomicU64,
    published: AtomicU64,
    publish_failed: AtomicU64,
    last_receive_ns: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            latency: (0..LATENCY_SHARDS).map(|_| Mutex::new(stats::histogram())).collect(),
            connected: AtomicU64::default(),
            received: AtomicU64::default(),
            unique: AtomicU64::default(),
            expected: AtomicU64::default(),
            published: AtomicU64::default(),
            publish_failed: AtomicU64::default(),
            last_receive_ns: AtomicU64::default(),
        }
    }
}

struct SubscriberResult {
    project: usize,
    seen: Vec<SeqSet>,
    duplicates: u64,
    ended: Option<String>,
    other_frames: u64,
}

struct PublisherResult {
    /// Which publisher (the index of its sequence numbers in the subscribers' tallies).
    index: usize,
    /// Confirmed sequence numbers, per project.
    confirmed: Vec<SeqSet>,
    errors: Causes,
    latency: Histogram<u64>,
    subscriber_mismatch: u64,
}

impl PublisherResult {
    fn empty(index: usize, projects: usize) -> PublisherResult {
        PublisherResult {
            index,
            confirmed: vec![SeqSet::default(); projects],
            errors: Causes::new(),
            latency: stats::histogram(),
            subscriber_mismatch: 0,
        }
    }

    /// A publication the server confirmed, saying it reached `subscribers` subscribers.
    fn confirm(&mut self, plan: &Plan, k: usize, seq: u64, subscribers: Option<u64>, latency: Duration) {
        stats::record(&mut self.latency, latency.as_micros() as u64);
        self.confirmed[k].insert(seq);
        if subscribers != Some(plan.per_project[k]) {
            self.subscriber_mismatch += 1;
        }
        plan.shared.expected.fetch_add(plan.per_project[k], Relaxed);
        plan.shared.published.fetch_add(1, Relaxed);
    }

    /// A publication that failed (refused, or not sent).
    fn fail(&mut self, plan: &Plan, cause: &str) {
        stats::bump(&mut self.errors, cause, 1);
        plan.shared.publish_failed.fetch_add(1, Relaxed);
    }
}

/// What every subscriber and publisher of a run shares: its shape, its targets, its counters.
struct Plan {
    server: Server,
    subscribers: usize,
    projects: usize,
    publishers: usize,
    source_addrs: u8,
    targets: Vec<Target>,
    run_id: String,
    /// Subscribers of each project: what every confirmed publication to it should reach.
    per_project: Vec<u64>,
    max_messages: u64,
    connect_timeout: Duration,
    /// Nothing of the run outlives it: subscribers stop reading, connections give up.
    hard_deadline: tokio::time::Instant,
    shared: Shared,
}

impl Plan {
    fn new(args: &Args) -> anyhow::Result<Plan> {
        let mut per_project = vec![0u64; args.projects];
        for i in 0..args.subscribers {
            per_project[i % args.projects] += 1;
        }
        let hard_bound = Duration::from_secs_f64(args.duration + args.drain_timeout + 120.0);
        Ok(Plan {
            server: args.server.kind,
            subscribers: args.subscribers,
            projects: args.projects,
            publishers: args.publishers,
            source_addrs: args.common.source_addrs,
            targets: args.common.targets()?,
            run_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            per_project,
            max_messages: if args.messages > 0 { args.messages } else { (args.rate * args.duration).ceil() as u64 },
            connect_timeout: args.common.connect_timeout(),
            hard_deadline: tokio::time::Instant::now() + hard_bound,
            shared: Shared::default(),
        })
    }

    fn project(&self, k: usize) -> String {
        crate::connect::project_id(&self.run_id, k, self.projects)
    }
}

impl Args {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.subscribers > 0 && self.projects > 0 && self.publishers > 0 && self.rate > 0.0,
            "--subscribers, --projects, --publishers and --rate must be positive"
        );
        self.server.check(&self.common)?;
        anyhow::ensure!(
            self.server.kind.has_metrics() || self.via == Via::Http,
            "--server nchan is published to by HTTP only (--via http)"
        );
        Ok(())
    }
}

pub async fn run(args: Args, nofile: u64) -> anyhow::Result<ExitCode> {
    args.check()?;
    let plan = Arc::new(Plan::new(&args)?);
    let metrics_urls = args.server.metrics_urls(&args.common, &plan.targets)?;
    let http = crate::http_client();
    let phase = Arc::new(Mutex::new("connecting"));
    let progress = progress_line(&plan, &phase, args.common.quiet);
    let (stop_tx, stop_rx) = watch::channel(false);

    // 1. Subscribers, all connected (and so subscribed) before the first publication.
    let connect_started = Instant::now();
    let (subscribers, connect_failures) = connect_subscribers(&plan, args.concurrency, stop_rx).await;
    let connect_seconds = connect_started.elapsed().as_secs_f64();

    // 2. Publishers: the measured window opens.
    set_phase(&phase, "publishing");
    let window = report::Window::open(&http, &metrics_urls).await;
    let started = Instant::now();
    let first_ns = stats::now_ns();
    let publisher_results = publish(&args, &plan, &http, started).await;
    let publish_seconds = started.elapsed().as_secs_f64();

    // 3. Drain: wait for every expected delivery (bounded), then stop the subscribers.
    set_phase(&phase, "draining");
    drain(&plan.shared, Duration::from_secs_f64(args.drain_timeout)).await;
    let measured = window.close(&http, &metrics_urls).await;
    let _ = stop_tx.send(true);
    set_phase(&phase, "closing");
    let subscriber_results = join_all(subscribers).await;
    drop(progress);

    // 4. Tally and report.
    let shared = &plan.shared;
    let mut latency = stats::histogram();
    for shard in &shared.latency {
        if let Ok(shard) = shard.lock() {
            let _ = latency.add(&*shard);
        }
    }
    let last_ns = shared.last_receive_ns.load(Relaxed).max(first_ns);
    let outcome = Outcome {
        connect_seconds,
        connect_failures,
        published: shared.published.load(Relaxed),
        publish_seconds,
        expected: shared.expected.load(Relaxed),
        received: shared.received.load(Relaxed),
        unique: shared.unique.load(Relaxed),
        delivery_seconds: (last_ns - first_ns) as f64 / 1e9,
        latency: stats::percentiles(&latency),
        tally: Tally::new(publisher_results, &subscriber_results),
        single_instance: if args.server.kind.has_metrics() {
            metrics_urls.len() == 1
        } else {
            net::distinct_instances(&plan.targets).len() == 1
        },
    };
    Ok(report(&args, nofile, &outcome, &measured).print(args.common.json))
}

fn set_phase(phase: &Mutex<&'static str>, now: &'static str) {
    *phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = now;
}

fn progress_line(plan: &Arc<Plan>, phase: &Arc<Mutex<&'static str>>, quiet: bool) -> Progress {
    let (plan, phase) = (plan.clone(), phase.clone());
    let last = Mutex::new((0u64, 0.0f64));
    Progress::start(quiet, move |elapsed| {
        let shared = &plan.shared;
        let received = shared.received.load(Relaxed);
        let mut last = last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let rate = (received - last.0) as f64 / (elapsed - last.1).max(1e-3);
        *last = (received, elapsed);
        format!(
            "fanout {elapsed:>5.0}s [{}] subscribers {}/{} published {} (failed {}) deliveries {received} ({rate:.0}/s) expected {}",
            phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
            shared.connected.load(Relaxed),
            plan.subscribers,
            shared.published.load(Relaxed),
            shared.publish_failed.load(Relaxed),
            shared.expected.load(Relaxed),
        )
    })
}

/// Starts every subscriber and waits until each is connected or has failed (bounded by the
/// run's deadline); the subscribers then read until `stop`.
async fn connect_subscribers(
    plan: &Arc<Plan>,
    concurrency: usize,
    stop: watch::Receiver<bool>,
) -> (JoinSet<SubscriberResult>, Causes) {
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let mut subscribers = JoinSet::new();
    for i in 0..plan.subscribers {
        subscribers.spawn(subscribe(i, plan.clone(), limit.clone(), ready_tx.clone(), stop.clone()));
    }
    drop(ready_tx);
    let mut connect_failures = Causes::new();
    while let Some(outcome) = tokio::time::timeout_at(plan.hard_deadline, ready_rx.recv()).await.ok().flatten() {
        if let Err(cause) = outcome {
            stats::bump(&mut connect_failures, &cause, 1);
        }
    }
    (subscribers, connect_failures)
}

/// Subscriber `i`: connects (reporting on `ready`), then tallies what it receives until `stop`.
async fn subscribe(
    i: usize,
    plan: Arc<Plan>,
    limit: Arc<Semaphore>,
    ready: tokio::sync::mpsc::UnboundedSender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> SubscriberResult {
    let target = &plan.targets[i % plan.targets.len()];
    let k = i % plan.projects;
    let url = plan.server.subscribe_url(target, &plan.project(k));
    let source = net::source_addr(i, plan.source_addrs);
    let permit = limit.acquire_owned().await.ok();
    let opened = net::open_expecting(target, &url, source, plan.connect_timeout, plan.server.greeting()).await;
    drop(permit);
    let mut result = SubscriberResult {
        project: k,
        seen: vec![SeqSet::default(); plan.publishers],
        duplicates: 0,
        ended: None,
        other_frames: 0,
    };
    let shared = &plan.shared;
    let mut ws = match opened {
        Ok(ws) => {
            shared.connected.fetch_add(1, Relaxed);
            let _ = ready.send(Ok(()));
            ws
        }
        Err(cause) => {
            let _ = ready.send(Err(cause.clone()));
            result.ended = Some(format!("connect_{cause}"));
            return result;
        }
    };
    drop(ready);
    let latency = &shared.latency[i % LATENCY_SHARDS];
    // Made once, not per frame: a timer registered and dropped per message costs the
    // generator more than the frame itself.
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
        match frame {
            Some(Ok(Message::Text(text))) => {
                let now = stats::now_ns();
                match delivered_stamp(plan.server, &text) {
                    Some(stamp) if stamp.publisher < plan.publishers => {
                        shared.received.fetch_add(1, Relaxed);
                        shared.last_receive_ns.fetch_max(now, Relaxed);
                        if let Ok(mut latency) = latency.lock() {
                            stats::record(&mut latency, now.saturating_sub(stamp.sent_at_ns) / 1000);
                        }
                        if result.seen[stamp.publisher].insert(stamp.seq) {
                            shared.unique.fetch_add(1, Relaxed);
                        } else {
                            result.duplicates += 1;
                        }
                    }
                    _ => result.other_frames += 1,
                }
            }
            Some(Ok(Message::Close(frame))) => {
                result.ended = Some(format!("closed_{}", net::close_code(&Message::Close(frame))));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                result.ended = Some(net::ws_cause("subscriber", &error));
                break;
            }
            None => {
                result.ended = Some("subscriber_eof".into());
                break;
            }
        }
    }
    if result.ended.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = ws.send(Message::Close(None)).await;
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
    result
}

/// Runs every publisher to the end of the publishing time (or of the count).
async fn publish(args: &Args, plan: &Arc<Plan>, http: &reqwest::Client, started: Instant) -> Vec<PublisherResult> {
    let end = started + Duration::from_secs_f64(args.duration);
    let pad = "x".repeat(args.payload_bytes);
    let mut publishers = JoinSet::new();
    for p in 0..args.publishers {
        let ctx = PublisherCtx {
            index: p,
            plan: plan.clone(),
            rate: args.rate,
            started,
            end,
            window: args.window.clamp(1, 250),
            pad: pad.clone(),
            target: plan.targets[p % plan.targets.len()].clone(),
            http: http.clone(),
            key: args.common.api_key.clone(),
        };
        match args.via {
            Via::Http => publishers.spawn(publish_http(ctx)),
            Via::Ws => publishers.spawn(publish_ws(ctx)),
        };
    }
    join_all(publishers).await
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

/// Waits (at most `timeout`) until every delivery the confirmed publications call for arrived.
async fn drain(shared: &Shared, timeout: Duration) {
    let drain_end = Instant::now() + timeout;
    // A failed publication may still have been delivered (it then counts in `unique` but not in
    // `expected`): after failures, wait for the deliveries to go quiet as well.
    let failures_seen = shared.publish_failed.load(Relaxed) > 0;
    let (mut last_unique, mut quiet_since) = (u64::MAX, Instant::now());
    while Instant::now() < drain_end {
        let unique = shared.unique.load(Relaxed);
        if unique != last_unique {
            (last_unique, quiet_since) = (unique, Instant::now());
        }
        let reached = unique >= shared.expected.load(Relaxed);
        if reached && (!failures_seen || quiet_since.elapsed() > Duration::from_millis(500)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The publishers' and subscribers' results set against each other: what was confirmed and not
/// received (lost), received twice (duplicated), or received and never confirmed.
#[derive(Debug)]
struct Tally {
    publish_errors: Causes,
    publish_latency: stats::Percentiles,
    subscriber_count_mismatches: u64,
    lost: u64,
    subscribers_with_loss: u64,
    duplicates: u64,
    received_unconfirmed: u64,
    other_frames: u64,
    subscriber_failures: Causes,
}

impl Tally {
    fn new(mut publishers: Vec<PublisherResult>, subscribers: &[SubscriberResult]) -> Tally {
        let mut publish_errors = Causes::new();
        let mut publish_latency = stats::histogram();
        let mut subscriber_count_mismatches = 0;
        for result in &publishers {
            stats::merge(&mut publish_errors, &result.errors);
            let _ = publish_latency.add(&result.latency);
            subscriber_count_mismatches += result.subscriber_mismatch;
        }
        // Indexed by publisher, as the subscribers' tallies are.
        publishers.sort_by_key(|result| result.index);
        let mut confirmed: Vec<Vec<SeqSet>> = Vec::new();
        for result in publishers {
            while confirmed.len() < result.index {
                confirmed.push(Vec::new());
            }
            confirmed.push(result.confirmed);
        }
        let mut tally = Tally {
            publish_errors,
            publish_latency: stats::percentiles(&publish_latency),
            subscriber_count_mismatches,
            lost: 0,
            subscribers_with_loss: 0,
            duplicates: 0,
            received_unconfirmed: 0,
            other_frames: 0,
            subscriber_failures: Causes::new(),
        };
        for result in subscribers {
            tally.duplicates += result.duplicates;
            tally.other_frames += result.other_frames;
            if let Some(cause) = &result.ended {
                stats::bump(&mut tally.subscriber_failures, cause, 1);
            }
            let mut missing_here = 0;
            for (p, seen) in result.seen.iter().enumerate() {
                if let Some(expected) = confirmed.get(p).and_then(|c| c.get(result.project)) {
                    missing_here += expected.missing_from(seen);
                    tally.received_unconfirmed += seen.extra_over(expected);
                }
            }
            tally.lost += missing_here;
            tally.subscribers_with_loss += u64::from(missing_here > 0);
        }
        tally
    }
}

/// Everything a fan-out run measured on the client side.
struct Outcome {
    connect_seconds: f64,
    connect_failures: Causes,
    published: u64,
    publish_seconds: f64,
    expected: u64,
    received: u64,
    unique: u64,
    /// From the first publication to the last delivery.
    delivery_seconds: f64,
    latency: stats::Percentiles,
    tally: Tally,
    /// With several instances (over Redis) a publish answers only its own instance's subscriber
    /// count, so the counts are compared only against a single instance.
    single_instance: bool,
}

fn report(args: &Args, nofile: u64, outcome: &Outcome, measured: &report::Measured) -> Report {
    let Outcome { published, expected, received, unique, publish_seconds, delivery_seconds, .. } = *outcome;
    let tally = &outcome.tally;
    let memory = args.server.memory_source();
    let publish_rate = published as f64 / publish_seconds.max(1e-9);
    let deliveries_per_s = report::per_second(unique, delivery_seconds);
    let server_deliveries =
        if args.server.kind.has_metrics() { measured.delta(scrape::DELIVERIES) } else { unique as f64 };
    let server_cpu = measured.server_cpu();
    let cpu_us_per_delivery = (server_deliveries > 0.0).then(|| server_cpu * 1e6 / server_deliveries);
    let slow_closed = measured.delta(scrape::SLOW_CLOSED);
    let ok = outcome.connect_failures.is_empty()
        && tally.subscriber_failures.is_empty()
        && tally.publish_errors.is_empty()
        && tally.lost == 0
        && tally.duplicates == 0
        && (tally.subscriber_count_mismatches == 0 || !outcome.single_instance)
        && published > 0;
    let value = json!({
        "scenario": "fanout",
        "ok": ok,
        "via": format!("{:?}", args.via).to_lowercase(),
        "subscribers": args.subscribers,
        "projects": args.projects,
        "publishers": args.publishers,
        "target_rate": args.rate,
        "duration": args.duration,
        "payload_bytes": args.payload_bytes,
        "nofile_limit": nofile,
        "subscriber_connect_seconds": outcome.connect_seconds,
        "subscriber_connect_failures": outcome.connect_failures,
        "published": published,
        "publish_rate_per_s": publish_rate,
        "publish_errors": tally.publish_errors,
        "publish_latency": tally.publish_latency,
        "subscriber_count_mismatches": tally.subscriber_count_mismatches,
        "expected_deliveries": expected,
        "deliveries": received,
        "unique_deliveries": unique,
        "deliveries_per_s": deliveries_per_s,
        "delivery_seconds": delivery_seconds,
        "lost": tally.lost,
        "subscribers_with_loss": tally.subscribers_with_loss,
        "duplicates": tally.duplicates,
        "received_unconfirmed": tally.received_unconfirmed,
        "other_frames": tally.other_frames,
        "subscriber_failures": tally.subscriber_failures,
        "latency": outcome.latency,
        "machine": measured.machine,
        "server": {
            "metrics_ok": measured.metrics_ok(),
            "deliveries": server_deliveries,
            "cpu_seconds": server_cpu,
            "cpu_us_per_delivery": cpu_us_per_delivery,
            "slow_consumers_closed": slow_closed,
            memory.field("bytes"): measured.after.get(memory.series()),
        },
    });
    let human = format!(
        "fanout ({:?}): {} subscribers over {} projects, {} publishers; published {published} in {publish_seconds:.2}s ({publish_rate:.0}/s, target {:.0}/s), publish errors: {}\n\
         deliveries: {received} received, {unique} unique of {expected} expected in {delivery_seconds:.2}s = {deliveries_per_s:.0}/s\n\
         lost {} (on {} subscribers), duplicated {}, subscriber-count mismatches {}, subscriber failures: {}, connect failures: {}\n\
         delivery latency: {}\n\
         publish latency:  {}\n\
         server: {server_deliveries:.0} deliveries, CPU {} = {} per delivery, slow consumers closed {slow_closed:.0}\n\
         {}",
        args.via,
        args.subscribers,
        args.projects,
        args.publishers,
        args.rate,
        stats::causes_line(&tally.publish_errors),
        tally.lost,
        tally.subscribers_with_loss,
        tally.duplicates,
        tally.subscriber_count_mismatches,
        stats::causes_line(&tally.subscriber_failures),
        stats::causes_line(&outcome.connect_failures),
        outcome.latency.line(),
        tally.publish_latency.line(),
        scrape::cpu_text(server_cpu),
        report::or_unknown(cpu_us_per_delivery, |us| format!("{us:.3} us")),
        measured.machine_line(),
    );
    Report { ok, value, human }
}

struct PublisherCtx {
    index: usize,
    plan: Arc<Plan>,
    rate: f64,
    started: Instant,
    end: Instant,
    window: usize,
    pad: String,
    target: Target,
    http: reqwest::Client,
    key: Option<String>,
}

impl PublisherCtx {
    /// The next publication of this publisher: (global number, project), after waiting for its
    /// time; None when the run is over (count or time).
    async fn next(&self, n: u64) -> Option<(u64, usize)> {
        let publishers = self.plan.publishers as u64;
        let global = n * publishers + self.index as u64;
        if global >= self.plan.max_messages {
            return None;
        }
        let at = self.started + Duration::from_secs_f64(global as f64 / self.rate);
        if at >= self.end {
            return None;
        }
        tokio::time::sleep_until(at.into()).await;
        Some((global, (global / publishers) as usize % self.plan.projects))
    }

    fn data(&self, seq: u64) -> Value {
        let mut data = json!({"sent_at_ns": stats::now_ns(), "seq": seq, "publisher": self.index});
        if !self.pad.is_empty() {
            data["pad"] = Value::String(self.pad.clone());
        }
        data
    }
}

async fn publish_http(ctx: PublisherCtx) -> PublisherResult {
    let ctx = Arc::new(ctx);
    let state = Arc::new(Mutex::new(PublisherResult::empty(ctx.index, ctx.plan.projects)));
    let window = Arc::new(Semaphore::new(ctx.window));
    let mut seqs = vec![0u64; ctx.plan.projects];
    let mut requests = JoinSet::new();
    let mut n = 0;
    while let Some((_, k)) = ctx.next(n).await {
        n += 1;
        let seq = seqs[k];
        seqs[k] += 1;
        let Ok(permit) = window.clone().acquire_owned().await else { break };
        let (ctx, state) = (ctx.clone(), state.clone());
        requests.spawn(async move {
            let project = ctx.plan.project(k);
            let body = json!({"project_id": project, "type": PUBLICATION_TYPE, "data": ctx.data(seq)});
            let t0 = Instant::now();
            let request = ctx.plan.server.publish_request(&ctx.http, &ctx.target, &project).json(&body);
            let outcome = http_publish(request, ctx.key.as_deref()).await;
            drop(permit);
            let mut state = state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match outcome {
                Ok(subscribers) => state.confirm(&ctx.plan, k, seq, Some(subscribers), t0.elapsed()),
                Err(cause) => state.fail(&ctx.plan, &cause),
            }
        });
        // Reap finished requests as we go (keeps the set small).
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
    let result = std::mem::replace(
        &mut *state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
        PublisherResult::empty(ctx.index, 0),
    );
    result
}

#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    subscribers: Option<u64>,
    #[serde(default)]
    code: Option<String>,
}

async fn publish_ws(ctx: PublisherCtx) -> PublisherResult {
    let mut result = PublisherResult::empty(ctx.index, ctx.plan.projects);
    let url = ctx.target.ws_url(None);
    let ws = match net::open(&ctx.target, &url, None, ctx.plan.connect_timeout).await {
        Ok(ws) => ws,
        Err(cause) => {
            result.fail(&ctx.plan, &format!("publisher_{cause}"));
            return result;
        }
    };
    let (mut sink, mut stream) = ws.split();
    let window = Arc::new(Semaphore::new(ctx.window));
    let sent_at = Arc::new(Mutex::new(std::collections::HashMap::<String, Instant>::new()));
    let (done_tx, mut done_rx) = watch::channel(false);
    let reader = {
        let (window, sent_at) = (window.clone(), sent_at.clone());
        let (plan, index) = (ctx.plan.clone(), ctx.index);
        let bound = ctx.end + Duration::from_secs(30);
        tokio::spawn(async move {
            let mut out = PublisherResult::empty(index, plan.projects);
            loop {
                if *done_rx.borrow() && sent_at.lock().unwrap().is_empty() {
                    break;
                }
                let frame = tokio::select! {
                    frame = stream.next() => frame,
                    _ = done_rx.changed() => continue,
                    () = tokio::time::sleep_until(bound.into()) => {
                        let left = sent_at.lock().unwrap().len() as u64;
                        stats::bump(&mut out.errors, "publish_unanswered", left);
                        break;
                    }
                };
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    _ => {
                        let left = sent_at.lock().unwrap().len() as u64;
                        stats::bump(&mut out.errors, "publisher_connection_lost", left.max(1));
                        break;
                    }
                };
                let Ok(reply) = serde_json::from_str::<Reply>(&text) else { continue };
                let Some(request_id) = reply.request_id else { continue };
                let Some(t0) = sent_at.lock().unwrap().remove(&request_id) else { continue };
                window.add_permits(1);
                let Some((k, seq)) = request_id
                    .split_once('.')
                    .and_then(|(k, s)| Some((k.parse::<usize>().ok()?, s.parse::<u64>().ok()?)))
                else {
                    continue;
                };
                if reply.kind == "publish_confirmed" {
                    out.confirm(&plan, k, seq, reply.subscribers, t0.elapsed());
                } else {
                    out.fail(&plan, &format!("ws_{}", reply.code.as_deref().unwrap_or(&reply.kind)));
                }
            }
            out
        })
    };
    let mut seqs = vec![0u64; ctx.plan.projects];
    let mut n = 0;
    while let Some((_, k)) = ctx.next(n).await {
        n += 1;
        let seq = seqs[k];
        seqs[k] += 1;
        match window.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        let request_id = format!("{k}.{seq}");
        let frame = json!({"action": "publish", "project_id": ctx.plan.project(k), "type": PUBLICATION_TYPE, "data": ctx.data(seq), "request_id": request_id});
        sent_at.lock().unwrap().insert(request_id, Instant::now());
        if sink.send(Message::text(frame.to_string())).await.is_err() {
            result.fail(&ctx.plan, "publisher_send_failed");
            break;
        }
    }
    let _ = done_tx.send(true);
    if let Ok(out) = reader.await {
        stats::merge(&mut result.errors, &out.errors);
        result.confirmed = out.confirmed;
        result.latency = out.latency;
        result.subscriber_mismatch = out.subscriber_mismatch;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(None))).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(members: &[u64]) -> SeqSet {
        let mut set = SeqSet::default();
        for &seq in members {
            set.insert(seq);
        }
        set
    }

    fn publisher(index: usize, confirmed: Vec<SeqSet>) -> PublisherResult {
        PublisherResult { confirmed, ..PublisherResult::empty(index, 0) }
    }

    fn subscriber(project: usize, seen: Vec<SeqSet>, duplicates: u64) -> SubscriberResult {
        SubscriberResult { project, seen, duplicates, ended: None, other_frames: 0 }
    }

    #[test]
    fn the_tally_sets_what_was_confirmed_against_what_each_subscriber_saw() {
        // Two publishers over two projects; the results come back in any order.
        let publishers =
            vec![publisher(1, vec![seqs(&[0]), seqs(&[0, 1])]), publisher(0, vec![seqs(&[0, 1, 2]), seqs(&[])])];
        let subscribers = [
            subscriber(0, vec![seqs(&[0, 1, 2]), seqs(&[0])], 0),
            // Project 0 again: publisher 0's 1 never arrived, 9 was never confirmed; one duplicate.
            subscriber(0, vec![seqs(&[0, 2, 9]), seqs(&[0])], 1),
            // Project 1: publisher 1's 1 never arrived.
            subscriber(1, vec![seqs(&[]), seqs(&[0])], 0),
        ];
        let tally = Tally::new(publishers, &subscribers);
        assert_eq!(tally.lost, 2);
        assert_eq!(tally.subscribers_with_loss, 2);
        assert_eq!(tally.duplicates, 1);
        assert_eq!(tally.received_unconfirmed, 1);
        assert!(tally.subscriber_failures.is_empty());
    }

    fn fanout_args(extra_args: &[&str]) -> Args {
        let cli = crate::tests::parse(
            &[&["fanout", "--url", "ws://127.0.0.1:1/ws", "--subscribers", "4", "--projects", "2"], extra_args]
                .concat(),
        )
        .expect("valid arguments");
        let crate::Command::Fanout(args) = cli.command else { panic!("not fanout") };
        args
    }

    /// 100 publications confirmed, 199 of their 200 deliveries received: one lost.
    fn outcome_with_one_lost() -> Outcome {
        let mut subscriber_failures = Causes::new();
        stats::bump(&mut subscriber_failures, "subscriber_eof", 1);
        Outcome {
            connect_seconds: 0.5,
            connect_failures: Causes::new(),
            published: 100,
            publish_seconds: 2.0,
            expected: 200,
            received: 199,
            unique: 199,
            delivery_seconds: 2.0,
            latency: stats::Percentiles::default(),
            tally: Tally {
                publish_errors: Causes::new(),
                publish_latency: stats::Percentiles::default(),
                subscriber_count_mismatches: 0,
                lost: 1,
                subscribers_with_loss: 1,
                duplicates: 0,
                received_unconfirmed: 0,
                other_frames: 0,
                subscriber_failures,
            },
            single_instance: true,
        }
    }

    #[test]
    fn the_report_carries_the_figures_the_scripts_read() {
        let args = fanout_args(&[]);
        let outcome = outcome_with_one_lost();
        let measured = report::tests::measured_for_test(
            &[(scrape::DELIVERIES, 1000.0), (scrape::CPU, 10.0)],
            &[(scrape::DELIVERIES, 1200.0), (scrape::CPU, 10.001)],
        );
        let report = report(&args, 20_000, &outcome, &measured);
        assert!(!report.ok, "a lost delivery fails the run");
        assert_eq!(report.value["deliveries_per_s"], 99.5);
        assert_eq!(report.value["publish_rate_per_s"], 50.0);
        assert_eq!(report.value["lost"], 1);
        assert_eq!(report.value["via"], "http");
        let per_delivery = report.value["server"]["cpu_us_per_delivery"].as_f64().expect("a figure");
        assert!((per_delivery - 5.0).abs() < 1e-6, "{per_delivery}");
        let lines: Vec<&str> = report.human.lines().collect();
        assert_eq!(lines.len(), 7, "{}", report.human);
        assert_eq!(
            lines[1], "deliveries: 199 received, 199 unique of 200 expected in 2.00s = 100/s",
            "{}",
            report.human
        );
        assert!(lines[2].starts_with("lost 1 (on 1 subscribers), duplicated 0, "), "{}", lines[2]);
        assert!(lines[2].contains("subscriber failures: subscriber_eof=1"), "{}", lines[2]);
        assert!(lines[5].ends_with("= 5.000 us per delivery, slow consumers closed 0"), "{}", lines[5]);
        assert!(lines[6].starts_with("machine CPU over the run: "), "{}", lines[6]);
    }

    #[test]
    fn nchans_cpu_is_divided_by_the_deliveries_its_subscribers_counted() {
        let args = fanout_args(&["--server", "nchan", "--server-pid", "1"]);
        let measured = report::tests::measured_for_test(
            &[(scrape::CPU, 10.0), (scrape::PSS, 1000.0)],
            &[(scrape::CPU, 10.000995), (scrape::PSS, 2000.0)],
        );
        let report = report(&args, 20_000, &outcome_with_one_lost(), &measured);
        assert_eq!(report.value["server"]["deliveries"], 199.0);
        let per_delivery = report.value["server"]["cpu_us_per_delivery"].as_f64().expect("a figure");
        assert!((per_delivery - 5.0).abs() < 1e-3, "{per_delivery}");
        assert_eq!(report.value["server"]["pss_bytes"], 2000.0);
    }

    #[test]
    fn a_delivery_is_read_from_either_envelope() {
        let stamp = || Some(Stamp { sent_at_ns: 17, seq: 3, publisher: 1 });
        let data = r#"{"sent_at_ns":17,"seq":3,"publisher":1}"#;
        let ours = format!(
            r#"{{"type":"message","id":"u","project_id":"p","event":"loadtest","data":{data},"published_at":"t"}}"#
        );
        // Nchan delivers the body as it was posted.
        let nchans = format!(r#"{{"project_id":"p","type":"loadtest","data":{data}}}"#);
        assert_eq!(delivered_stamp(Server::Gateway, &ours), stamp());
        assert_eq!(delivered_stamp(Server::Nchan, &nchans), stamp());
        assert_eq!(delivered_stamp(Server::Gateway, &nchans), None, "not the gateway's envelope");
        assert_eq!(delivered_stamp(Server::Nchan, r#"{"type":"loadtest_verify","data":{"verify":"x"}}"#), None);
        assert_eq!(delivered_stamp(Server::Gateway, r#"{"type":"connected","connection_id":"c"}"#), None);
        assert_eq!(delivered_stamp(Server::Nchan, "not json"), None);
    }

    #[test]
    fn nchan_is_published_to_by_http_only() {
        assert!(fanout_args(&["--server", "nchan", "--server-pid", "1"]).check().is_ok());
        let error = fanout_args(&["--server", "nchan", "--server-pid", "1", "--via", "ws"]).check().expect_err("ws");
        assert!(format!("{error:#}").contains("--via http"), "{error:#}");
        assert!(fanout_args(&["--via", "ws"]).check().is_ok(), "the gateway takes both");
    }
}
