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
    scrape,
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
}

/// Publishes through the HTTP API; the `subscribers` the server reports, or a cause.
pub async fn http_publish(
    client: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    body: &Value,
) -> Result<u64, String> {
    let mut request = client.post(format!("{base}/api/v1/publish")).json(body);
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

#[derive(Deserialize)]
struct Stamp {
    sent_at_ns: u64,
    seq: u64,
    publisher: usize,
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

pub async fn run(args: Args, nofile: u64) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.subscribers > 0 && args.projects > 0 && args.publishers > 0 && args.rate > 0.0,
        "--subscribers, --projects, --publishers and --rate must be positive"
    );
    let targets = Arc::new(args.common.targets()?);
    let metrics_urls = args.common.metrics_urls(&targets)?;
    let http = crate::http_client();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let project = {
        let run_id = run_id.clone();
        move |k: usize| format!("lt-{run_id}-{k}")
    };
    let shared = Arc::new(Shared::default());
    let timeout = args.common.connect_timeout();
    let max_messages = if args.messages > 0 { args.messages } else { (args.rate * args.duration).ceil() as u64 };
    let (stop_tx, stop_rx) = watch::channel(false);
    let hard_bound = Duration::from_secs_f64(args.duration + args.drain_timeout + 120.0);
    let hard_deadline = tokio::time::Instant::now() + hard_bound;
    let mut per_project = vec![0u64; args.projects];
    for i in 0..args.subscribers {
        per_project[i % args.projects] += 1;
    }
    let per_project = Arc::new(per_project);

    let phase = Arc::new(Mutex::new("connecting"));
    let _progress = {
        let (shared, phase) = (shared.clone(), phase.clone());
        let last = Mutex::new((0u64, 0.0f64));
        let subs = args.subscribers;
        Progress::start(args.common.quiet, move |elapsed| {
            let received = shared.received.load(Relaxed);
            let mut last = last.lock().unwrap();
            let rate = (received - last.0) as f64 / (elapsed - last.1).max(1e-3);
            *last = (received, elapsed);
            format!(
                "fanout {elapsed:>5.0}s [{}] subscribers {}/{subs} published {} (failed {}) deliveries {received} ({rate:.0}/s) expected {}",
                phase.lock().unwrap(),
                shared.connected.load(Relaxed),
                shared.published.load(Relaxed),
                shared.publish_failed.load(Relaxed),
                shared.expected.load(Relaxed),
            )
        })
    };

    // 1. Subscribers, all connected (and so subscribed) before the first publication.
    let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let mut subscribers = JoinSet::new();
    for i in 0..args.subscribers {
        let target = targets[i % targets.len()].clone();
        let k = i % args.projects;
        let url = target.ws_url(Some(&project(k)));
        let source = net::source_addr(i, args.common.source_addrs);
        let (limit, shared, ready, mut stop) = (limit.clone(), shared.clone(), ready_tx.clone(), stop_rx.clone());
        let publishers = args.publishers;
        subscribers.spawn(async move {
            let permit = limit.acquire_owned().await.ok();
            let opened = net::open(&target, &url, source, timeout).await;
            drop(permit);
            let mut result = SubscriberResult {
                project: k,
                seen: vec![SeqSet::default(); publishers],
                duplicates: 0,
                ended: None,
                other_frames: 0,
            };
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
            let deadline = tokio::time::sleep_until(hard_deadline);
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
                        match serde_json::from_str::<Incoming>(&text) {
                            Ok(Incoming { kind: "message", data: Some(stamp) }) if stamp.publisher < publishers => {
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
        });
    }
    drop(ready_tx);
    let mut connect_failures = Causes::new();
    let connect_started = Instant::now();
    while let Some(outcome) = tokio::time::timeout_at(hard_deadline, ready_rx.recv()).await.ok().flatten() {
        if let Err(cause) = outcome {
            stats::bump(&mut connect_failures, &cause, 1);
        }
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();

    // 2. Publishers.
    *phase.lock().unwrap() = "publishing";
    let before = scrape::scrape(&http, &metrics_urls).await;
    let cpu_before = scrape::machine_cpu();
    let started = Instant::now();
    let first_ns = stats::now_ns();
    let end = started + Duration::from_secs_f64(args.duration);
    let mut publishers = JoinSet::new();
    let pad = "x".repeat(args.payload_bytes);
    for p in 0..args.publishers {
        let ctx = PublisherCtx {
            index: p,
            publishers: args.publishers,
            projects: args.projects,
            rate: args.rate,
            max_messages,
            started,
            end,
            window: args.window.clamp(1, 250),
            run_project: Arc::new(project.clone()),
            per_project: per_project.clone(),
            shared: shared.clone(),
            pad: pad.clone(),
            target: targets[p % targets.len()].clone(),
            http: http.clone(),
            key: args.common.api_key.clone(),
            timeout,
        };
        match args.via {
            Via::Http => publishers.spawn(publish_http(ctx)),
            Via::Ws => publishers.spawn(publish_ws(ctx)),
        };
    }
    let mut publisher_results = Vec::new();
    while let Some(result) = publishers.join_next().await {
        if let Ok(result) = result {
            publisher_results.push(result);
        }
    }
    let publish_seconds = started.elapsed().as_secs_f64();

    // 3. Drain: wait for every expected delivery (bounded), then stop the subscribers.
    *phase.lock().unwrap() = "draining";
    let drain_end = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
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
    let after = scrape::scrape(&http, &metrics_urls).await;
    let machine = scrape::machine_json(
        &cpu_before,
        &scrape::machine_cpu(),
        scrape::delta(&before, &after, scrape::CPU),
        started.elapsed().as_secs_f64(),
    );
    let _ = stop_tx.send(true);
    *phase.lock().unwrap() = "closing";
    let mut subscriber_results = Vec::new();
    while let Some(result) = subscribers.join_next().await {
        if let Ok(result) = result {
            subscriber_results.push(result);
        }
    }
    drop(_progress);

    // 4. Tally.
    let mut confirmed: Vec<Vec<SeqSet>> = Vec::new();
    let mut publish_errors = Causes::new();
    let mut publish_latency = stats::histogram();
    let mut mismatch = 0;
    for result in &publisher_results {
        stats::merge(&mut publish_errors, &result.errors);
        let _ = publish_latency.add(&result.latency);
        mismatch += result.subscriber_mismatch;
    }
    // Indexed by publisher: the subscribers' tallies are.
    publisher_results.sort_by_key(|result| result.index);
    for result in publisher_results {
        while confirmed.len() < result.index {
            confirmed.push(Vec::new());
        }
        confirmed.push(result.confirmed);
    }
    let mut latency = stats::histogram();
    for shard in &shared.latency {
        if let Ok(shard) = shard.lock() {
            let _ = latency.add(&*shard);
        }
    }
    let (mut lost, mut duplicates, mut unconfirmed_received, mut other_frames) = (0u64, 0u64, 0u64, 0u64);
    let mut subscriber_failures = Causes::new();
    let mut subscribers_losing = 0u64;
    for result in &subscriber_results {
        duplicates += result.duplicates;
        other_frames += result.other_frames;
        if let Some(cause) = &result.ended {
            stats::bump(&mut subscriber_failures, cause, 1);
        }
        let mut missing_here = 0;
        for (p, seen) in result.seen.iter().enumerate() {
            if let Some(expected) = confirmed.get(p).and_then(|c| c.get(result.project)) {
                missing_here += expected.missing_from(seen);
                unconfirmed_received += seen.extra_over(expected);
            }
        }
        lost += missing_here;
        subscribers_losing += u64::from(missing_here > 0);
    }
    let published = shared.published.load(Relaxed);
    let expected = shared.expected.load(Relaxed);
    let received = shared.received.load(Relaxed);
    let unique = shared.unique.load(Relaxed);
    let last_ns = shared.last_receive_ns.load(Relaxed).max(first_ns);
    let delivery_seconds = (last_ns - first_ns) as f64 / 1e9;
    let deliveries_per_s = if delivery_seconds > 0.0 { unique as f64 / delivery_seconds } else { 0.0 };
    let latency = stats::percentiles(&latency);
    let publish_latency = stats::percentiles(&publish_latency);
    let server_deliveries = scrape::delta(&before, &after, scrape::DELIVERIES);
    let server_cpu = scrape::delta(&before, &after, scrape::CPU);
    let cpu_us_per_delivery = (server_deliveries > 0.0).then(|| server_cpu * 1e6 / server_deliveries);
    let slow_closed = scrape::delta(&before, &after, scrape::SLOW_CLOSED);
    // With several instances (over Redis) a publish answers only its own instance's subscriber
    // count, so the counts are compared only against a single instance.
    let single_instance = metrics_urls.len() == 1;
    let ok = connect_failures.is_empty()
        && subscriber_failures.is_empty()
        && publish_errors.is_empty()
        && lost == 0
        && duplicates == 0
        && (mismatch == 0 || !single_instance)
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
        "subscriber_connect_seconds": connect_seconds,
        "subscriber_connect_failures": connect_failures,
        "published": published,
        "publish_rate_per_s": published as f64 / publish_seconds.max(1e-9),
        "publish_errors": publish_errors,
        "publish_latency": publish_latency,
        "subscriber_count_mismatches": mismatch,
        "expected_deliveries": expected,
        "deliveries": received,
        "unique_deliveries": unique,
        "deliveries_per_s": deliveries_per_s,
        "delivery_seconds": delivery_seconds,
        "lost": lost,
        "subscribers_with_loss": subscribers_losing,
        "duplicates": duplicates,
        "received_unconfirmed": unconfirmed_received,
        "other_frames": other_frames,
        "subscriber_failures": subscriber_failures,
        "latency": latency,
        "machine": machine,
        "server": {
            "metrics_ok": before.ok && after.ok,
            "deliveries": server_deliveries,
            "cpu_seconds": server_cpu,
            "cpu_us_per_delivery": cpu_us_per_delivery,
            "slow_consumers_closed": slow_closed,
            "rss_bytes": after.get(scrape::RSS),
        },
    });
    let human = format!(
        "fanout ({:?}): {} subscribers over {} projects, {} publishers; published {published} in {publish_seconds:.2}s ({:.0}/s, target {:.0}/s), publish errors: {}\n\
         deliveries: {received} received, {unique} unique of {expected} expected in {delivery_seconds:.2}s = {deliveries_per_s:.0}/s\n\
         lost {lost} (on {subscribers_losing} subscribers), duplicated {duplicates}, subscriber-count mismatches {mismatch}, subscriber failures: {}, connect failures: {}\n\
         delivery latency: {}\n\
         publish latency:  {}\n\
         server: {server_deliveries:.0} deliveries, CPU {} = {} per delivery, slow consumers closed {slow_closed:.0}\n\
         machine CPU over the run: {}",
        args.via,
        args.subscribers,
        args.projects,
        args.publishers,
        published as f64 / publish_seconds.max(1e-9),
        args.rate,
        stats::causes_line(&publish_errors),
        stats::causes_line(&subscriber_failures),
        stats::causes_line(&connect_failures),
        latency.line(),
        publish_latency.line(),
        scrape::cpu_text(server_cpu),
        cpu_us_per_delivery.map_or("unknown".to_owned(), |us| format!("{us:.3} us")),
        scrape::machine_line(&machine),
    );
    Ok(crate::finish(args.common.json, &human, &value, ok))
}

struct PublisherCtx {
    index: usize,
    publishers: usize,
    projects: usize,
    rate: f64,
    max_messages: u64,
    started: Instant,
    end: Instant,
    window: usize,
    run_project: Arc<dyn Fn(usize) -> String + Send + Sync>,
    per_project: Arc<Vec<u64>>,
    shared: Arc<Shared>,
    pad: String,
    target: Target,
    http: reqwest::Client,
    key: Option<String>,
    timeout: Duration,
}

impl PublisherCtx {
    /// The next publication of this publisher: (global number, project), after waiting for its
    /// time; None when the run is over (count or time).
    async fn next(&self, n: u64) -> Option<(u64, usize)> {
        let global = n * self.publishers as u64 + self.index as u64;
        if global >= self.max_messages {
            return None;
        }
        let at = self.started + Duration::from_secs_f64(global as f64 / self.rate);
        if at >= self.end {
            return None;
        }
        tokio::time::sleep_until(at.into()).await;
        Some((global, (global / self.publishers as u64) as usize % self.projects))
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
    let state = Arc::new(Mutex::new(PublisherResult {
        index: ctx.index,
        confirmed: vec![SeqSet::default(); ctx.projects],
        errors: Causes::new(),
        latency: stats::histogram(),
        subscriber_mismatch: 0,
    }));
    let window = Arc::new(Semaphore::new(ctx.window));
    let mut seqs = vec![0u64; ctx.projects];
    let base = ctx.target.http_base();
    let mut requests = JoinSet::new();
    let mut n = 0;
    while let Some((_, k)) = ctx.next(n).await {
        n += 1;
        let seq = seqs[k];
        seqs[k] += 1;
        let Ok(permit) = window.clone().acquire_owned().await else { break };
        let (ctx, state, base) = (ctx.clone(), state.clone(), base.clone());
        requests.spawn(async move {
            let body = json!({"project_id": (ctx.run_project)(k), "type": "loadtest", "data": ctx.data(seq)});
            let t0 = Instant::now();
            let outcome = http_publish(&ctx.http, &base, ctx.key.as_deref(), &body).await;
            drop(permit);
            let mut state = state.lock().unwrap();
            match outcome {
                Ok(subscribers) => {
                    stats::record(&mut state.latency, t0.elapsed().as_micros() as u64);
                    state.confirmed[k].insert(seq);
                    if subscribers != ctx.per_project[k] {
                        state.subscriber_mismatch += 1;
                    }
                    ctx.shared.expected.fetch_add(ctx.per_project[k], Relaxed);
                    ctx.shared.published.fetch_add(1, Relaxed);
                }
                Err(cause) => {
                    stats::bump(&mut state.errors, &cause, 1);
                    ctx.shared.publish_failed.fetch_add(1, Relaxed);
                }
            }
        });
        // Reap finished requests as we go (keeps the set small).
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
    let result = std::mem::replace(
        &mut *state.lock().unwrap(),
        PublisherResult {
            index: ctx.index,
            confirmed: Vec::new(),
            errors: Causes::new(),
            latency: stats::histogram(),
            subscriber_mismatch: 0,
        },
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
    let mut result = PublisherResult {
        index: ctx.index,
        confirmed: vec![SeqSet::default(); ctx.projects],
        errors: Causes::new(),
        latency: stats::histogram(),
        subscriber_mismatch: 0,
    };
    let url = ctx.target.ws_url(None);
    let ws = match net::open(&ctx.target, &url, None, ctx.timeout).await {
        Ok(ws) => ws,
        Err(cause) => {
            stats::bump(&mut result.errors, &format!("publisher_{cause}"), 1);
            ctx.shared.publish_failed.fetch_add(1, Relaxed);
            return result;
        }
    };
    let (mut sink, mut stream) = ws.split();
    let window = Arc::new(Semaphore::new(ctx.window));
    let sent_at = Arc::new(Mutex::new(std::collections::HashMap::<String, Instant>::new()));
    let (done_tx, mut done_rx) = watch::channel(false);
    let reader = {
        let (window, sent_at) = (window.clone(), sent_at.clone());
        let shared = ctx.shared.clone();
        let per_project = ctx.per_project.clone();
        let bound = ctx.end + Duration::from_secs(30);
        tokio::spawn(async move {
            let mut out = PublisherResult {
                index: 0,
                confirmed: vec![SeqSet::default(); per_project.len()],
                errors: Causes::new(),
                latency: stats::histogram(),
                subscriber_mismatch: 0,
            };
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
                    stats::record(&mut out.latency, t0.elapsed().as_micros() as u64);
                    out.confirmed[k].insert(seq);
                    if reply.subscribers != Some(per_project[k]) {
                        out.subscriber_mismatch += 1;
                    }
                    shared.expected.fetch_add(per_project[k], Relaxed);
                    shared.published.fetch_add(1, Relaxed);
                } else {
                    stats::bump(&mut out.errors, &format!("ws_{}", reply.code.as_deref().unwrap_or(&reply.kind)), 1);
                    shared.publish_failed.fetch_add(1, Relaxed);
                }
            }
            out
        })
    };
    let mut seqs = vec![0u64; ctx.projects];
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
        let frame = json!({"action": "publish", "project_id": (ctx.run_project)(k), "type": "loadtest", "data": ctx.data(seq), "request_id": request_id});
        sent_at.lock().unwrap().insert(request_id, Instant::now());
        if sink.send(Message::text(frame.to_string())).await.is_err() {
            stats::bump(&mut result.errors, "publisher_send_failed", 1);
            ctx.shared.publish_failed.fetch_add(1, Relaxed);
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
