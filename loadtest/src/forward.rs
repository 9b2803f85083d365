//! `forward`: C clients forwarding to the agent queues at a target rate (or as fast as their
//! in-flight windows allow); confirmed forwards/s, confirmation latency, errors by code, and the
//! server's SQS entries per SendMessageBatch call from `/metrics`.
//!
//! With `--bare-sqs-queue-url` (and `--bare-sqs-endpoint`), the same run then measures a bare
//! aws-sdk-sqs client sending 10-entry SendMessageBatch calls to the same emulator for as long,
//! and reports the ratio. `bare-sqs` does only that part.
//!
//! A forward's `message_id` carries its client, its number and its send time
//! (`lt-RUN-CLIENT-N-SENTNS`), so the echoed id alone gives the latency and the bookkeeping.

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    net,
    report::{self, Report},
    scrape,
    stats::{self, Causes, SeqSet},
    Common, Progress,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Client connections.
    #[arg(long, default_value_t = 5)]
    pub clients: usize,
    /// Forwards per second over all clients (0: as fast as the windows allow).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Forwards one client may have unanswered (the server's MAX_INFLIGHT_PER_CONNECTION is 256).
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Seconds of forwarding.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// At most this many forwards in all (0: no cap beyond the duration... and 10,000,000).
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// Message types, round-robin (pm, dev, qa, ops).
    #[arg(long, value_delimiter = ',', default_value = "pm,dev,qa,ops")]
    pub types: Vec<String>,
    /// Extra bytes of padding in each forward's data.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Seconds to wait for the answers still due after the last forward.
    #[arg(long, default_value_t = 15.0)]
    pub drain_timeout: f64,
    /// SQS endpoint of the emulator for the bare-client comparison, e.g. http://127.0.0.1:4566.
    #[arg(long)]
    pub bare_sqs_endpoint: Option<String>,
    /// Queue URL(s) for the bare-client comparison (round-robin).
    #[arg(long = "bare-sqs-queue-url")]
    pub bare_sqs_queue_urls: Vec<String>,
    /// Concurrent SendMessageBatch calls of the bare client.
    #[arg(long, default_value_t = 32)]
    pub bare_concurrency: usize,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BareArgs {
    /// SQS endpoint of the emulator (loopback), e.g. http://127.0.0.1:4566.
    #[arg(long)]
    pub endpoint: String,
    /// Queue URL(s), round-robin.
    #[arg(long = "queue-url", required = true)]
    pub queue_urls: Vec<String>,
    /// Concurrent SendMessageBatch calls.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Bytes of each message body.
    #[arg(long, default_value_t = 200)]
    pub body_bytes: usize,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub quiet: bool,
}

/// The live counters (the progress line reads them).
#[derive(Default)]
struct Shared {
    sent: AtomicU64,
    confirmed: AtomicU64,
    errors: AtomicU64,
}

struct ClientResult {
    sent: u64,
    confirmed: u64,
    duplicates: u64,
    errors: Causes,
    latency: Histogram<u64>,
    unanswered: u64,
    failure: Option<String>,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

/// `lt-RUN-CLIENT-N-SENTNS` -> (N, SENTNS).
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let mut parts = id.rsplitn(3, '-');
    let sent = parts.next()?.parse().ok()?;
    let n = parts.next()?.parse().ok()?;
    Some((n, sent))
}

impl ClientResult {
    fn empty(failure: Option<String>) -> ClientResult {
        ClientResult {
            sent: 0,
            confirmed: 0,
            duplicates: 0,
            errors: Causes::new(),
            latency: stats::histogram(),
            unanswered: 0,
            failure,
        }
    }
}

/// What every client of a run shares.
struct Plan {
    run_id: String,
    shared: Arc<Shared>,
    types: Vec<String>,
    pad: String,
    window: usize,
    /// Forwards per second of one client (0: as fast as its window allows).
    rate: f64,
    /// Forwards one client sends at most.
    max: u64,
    /// End of the forwarding.
    end: Instant,
    /// How long answers due after the last forward are waited for.
    drain: Duration,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.clients > 0 && !args.types.is_empty(), "--clients and --types must not be empty");
    let targets = args.common.targets()?;
    let metrics_urls = args.common.metrics_urls(&targets)?;
    let http = crate::http_client();
    let shared = Arc::new(Shared::default());
    let max_messages = if args.messages > 0 { args.messages } else { 10_000_000 };
    let progress = progress_line(&shared, args.common.quiet);

    // Connect every client first, so the measured window is forwarding only.
    let mut sockets = Vec::new();
    let mut connect_failures = Causes::new();
    for c in 0..args.clients {
        let target = &targets[c % targets.len()];
        let url = target.ws_url(None);
        match net::open(target, &url, net::source_addr(c, args.common.source_addrs), args.common.connect_timeout())
            .await
        {
            Ok(ws) => sockets.push((c, ws)),
            Err(cause) => stats::bump(&mut connect_failures, &cause, 1),
        }
    }

    // The measured window: every client forwards until the end, then waits for its answers.
    let window = report::Window::open(&http, &metrics_urls).await;
    let started = Instant::now();
    let plan = Arc::new(Plan {
        run_id: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        shared,
        types: args.types.clone(),
        pad: "x".repeat(args.payload_bytes),
        window: args.window.clamp(1, 256),
        rate: args.rate / args.clients as f64,
        max: max_messages.div_ceil(args.clients as u64),
        end: started + Duration::from_secs_f64(args.duration),
        drain: Duration::from_secs_f64(args.drain_timeout),
    });
    let mut clients = JoinSet::new();
    for (c, ws) in sockets {
        clients.spawn(client(c, ws, plan.clone()));
    }
    let mut results = Vec::new();
    while let Some(result) = clients.join_next().await {
        if let Ok(result) = result {
            results.push(result);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let measured = window.close(&http, &metrics_urls).await;
    drop(progress);

    // The bare SDK client, for comparison, after the gateway's run.
    let mut bare = None;
    if let Some(endpoint) = &args.bare_sqs_endpoint {
        anyhow::ensure!(!args.bare_sqs_queue_urls.is_empty(), "--bare-sqs-endpoint needs --bare-sqs-queue-url");
        let bare_args = BareArgs {
            endpoint: endpoint.clone(),
            queue_urls: args.bare_sqs_queue_urls.clone(),
            concurrency: args.bare_concurrency,
            duration: args.duration,
            body_bytes: 200 + args.payload_bytes,
            json: false,
            quiet: args.common.quiet,
        };
        bare = Some(bare_sqs(&bare_args).await?);
    }
    let outcome = Outcome::new(&results, connect_failures, args.duration.min(elapsed));
    Ok(report(&args, &outcome, &measured, bare.as_ref()).print(args.common.json))
}

fn progress_line(shared: &Arc<Shared>, quiet: bool) -> Progress {
    let shared = shared.clone();
    let last = Mutex::new((0u64, 0.0f64));
    Progress::start(quiet, move |elapsed| {
        let confirmed = shared.confirmed.load(Relaxed);
        let mut last = last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let rate = (confirmed - last.0) as f64 / (elapsed - last.1).max(1e-3);
        *last = (confirmed, elapsed);
        format!(
            "forward {elapsed:>5.0}s sent {} confirmed {confirmed} ({rate:.0}/s) errors {}",
            shared.sent.load(Relaxed),
            shared.errors.load(Relaxed)
        )
    })
}

/// Client `c`: forwards at its rate within its window until the end (or its count), while a
/// reader task takes the answers; then waits (bounded) for the answers still due.
async fn client(c: usize, ws: net::Ws, plan: Arc<Plan>) -> ClientResult {
    let (mut sink, stream) = ws.split();
    let permits = Arc::new(Semaphore::new(plan.window));
    let outstanding = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(read_answers(stream, plan.clone(), permits.clone(), outstanding.clone(), done_rx));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut send_failure = None;
    while sent < plan.max {
        if plan.rate > 0.0 {
            let at = start + Duration::from_secs_f64(sent as f64 / plan.rate);
            if at >= plan.end {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
        }
        let permit = tokio::select! {
            permit = permits.acquire() => permit,
            () = tokio::time::sleep_until(plan.end.into()) => break,
        };
        match permit {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        if Instant::now() >= plan.end {
            permits.add_permits(1);
            break;
        }
        let kind = &plan.types[(sent as usize + c) % plan.types.len()];
        let message_id = format!("lt-{}-{c}-{sent}-{}", plan.run_id, stats::now_ns());
        let mut data = json!({"seq": sent, "client": c});
        if !plan.pad.is_empty() {
            data["pad"] = json!(plan.pad);
        }
        let frame = json!({"action": "forward", "type": kind, "message_id": message_id, "project_id": format!("lt-{}", plan.run_id), "data": data});
        outstanding.fetch_add(1, Relaxed);
        if let Err(error) = sink.send(Message::text(frame.to_string())).await {
            outstanding.fetch_sub(1, Relaxed);
            send_failure = Some(net::ws_cause("send", &error));
            break;
        }
        sent += 1;
        plan.shared.sent.fetch_add(1, Relaxed);
    }
    let _ = done_tx.send(true);
    let mut out = reader.await.unwrap_or_else(|_| ClientResult::empty(Some("reader_panicked".into())));
    out.sent = sent;
    if out.failure.is_none() {
        out.failure = send_failure;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = sink.send(Message::Close(None)).await;
    })
    .await;
    out
}

/// One client's answers: each echoed `message_id` gives its latency and frees a window slot.
/// Ends when the sender is done and nothing is outstanding, or the drain time is over.
async fn read_answers(
    mut stream: futures_util::stream::SplitStream<net::Ws>,
    plan: Arc<Plan>,
    permits: Arc<Semaphore>,
    outstanding: Arc<AtomicU64>,
    mut done_rx: tokio::sync::watch::Receiver<bool>,
) -> ClientResult {
    let shared = &plan.shared;
    let mut out = ClientResult::empty(None);
    let mut answered = SeqSet::default();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if *done_rx.borrow() {
            if outstanding.load(Relaxed) == 0 {
                break;
            }
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + plan.drain);
        }
        let bound = deadline.unwrap_or_else(|| (plan.end + plan.drain + Duration::from_secs(60)).into());
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = done_rx.changed() => continue,
            () = tokio::time::sleep_until(bound) => break,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                out.failure = Some(format!("closed_{}", net::close_code(&Message::Close(frame))));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                out.failure = Some(net::ws_cause("client", &error));
                break;
            }
            None => {
                out.failure = Some("client_eof".into());
                break;
            }
        };
        let now = stats::now_ns();
        let Ok(reply) = serde_json::from_str::<Reply>(&text) else { continue };
        let Some((n, sent_ns)) = reply.message_id.as_deref().and_then(parse_id) else {
            if reply.kind == "error" {
                stats::bump(&mut out.errors, reply.code.as_deref().unwrap_or("unknown"), 1);
                shared.errors.fetch_add(1, Relaxed);
            }
            continue;
        };
        if !answered.insert(n) {
            out.duplicates += 1;
            continue;
        }
        outstanding.fetch_sub(1, Relaxed);
        permits.add_permits(1);
        if reply.kind == "forward_confirmed" {
            out.confirmed += 1;
            shared.confirmed.fetch_add(1, Relaxed);
            stats::record(&mut out.latency, now.saturating_sub(sent_ns) / 1000);
        } else {
            stats::bump(&mut out.errors, reply.code.as_deref().unwrap_or(&reply.kind), 1);
            shared.errors.fetch_add(1, Relaxed);
        }
    }
    out.unanswered = outstanding.load(Relaxed);
    out
}

/// The clients' results put together.
#[derive(Debug)]
struct Outcome {
    sent: u64,
    confirmed: u64,
    duplicates: u64,
    unanswered: u64,
    errors: Causes,
    /// Connections that failed, at the start or during the run, by cause.
    failures: Causes,
    latency: stats::Percentiles,
    /// The forwarding time the rate is over: the duration, or less when the run ended early.
    window_seconds: f64,
}

impl Outcome {
    fn new(results: &[ClientResult], connect_failures: Causes, window_seconds: f64) -> Outcome {
        let mut outcome = Outcome {
            sent: 0,
            confirmed: 0,
            duplicates: 0,
            unanswered: 0,
            errors: Causes::new(),
            failures: connect_failures,
            latency: stats::Percentiles::default(),
            window_seconds,
        };
        let mut latency = stats::histogram();
        for result in results {
            outcome.sent += result.sent;
            outcome.confirmed += result.confirmed;
            outcome.duplicates += result.duplicates;
            outcome.unanswered += result.unanswered;
            stats::merge(&mut outcome.errors, &result.errors);
            let _ = latency.add(&result.latency);
            if let Some(failure) = &result.failure {
                stats::bump(&mut outcome.failures, failure, 1);
            }
        }
        outcome.latency = stats::percentiles(&latency);
        outcome
    }
}

fn report(args: &Args, outcome: &Outcome, measured: &report::Measured, bare: Option<&BareResult>) -> Report {
    let Outcome { sent, confirmed, duplicates, unanswered, window_seconds, .. } = *outcome;
    let confirmed_per_s = report::per_second(confirmed, window_seconds);
    let entries_per_batch = scrape::entries_per_batch(&measured.before, &measured.after);
    let batch_calls = measured.delta(scrape::BATCH_COUNT);
    let server_cpu = measured.server_cpu();
    let ratio = bare.and_then(|b| (b.messages_per_s > 0.0).then(|| confirmed_per_s / b.messages_per_s));
    let ok =
        outcome.failures.is_empty() && outcome.errors.is_empty() && duplicates == 0 && unanswered == 0 && confirmed > 0;
    let value = json!({
        "scenario": "forward",
        "ok": ok,
        "clients": args.clients,
        "target_rate": args.rate,
        "window": args.window,
        "duration": args.duration,
        "types": args.types,
        "payload_bytes": args.payload_bytes,
        "sent": sent,
        "confirmed": confirmed,
        "confirmed_per_s": confirmed_per_s,
        "errors": outcome.errors,
        "unanswered": unanswered,
        "duplicates": duplicates,
        "failures": outcome.failures,
        "latency": outcome.latency,
        "server": {
            "metrics_ok": measured.metrics_ok(),
            "entries_per_batch": entries_per_batch,
            "batch_calls": batch_calls,
            "cpu_seconds": server_cpu,
            "cpu_us_per_forward": (confirmed > 0).then(|| server_cpu * 1e6 / confirmed as f64),
        },
        "machine": measured.machine,
        "bare_sqs": bare.map(BareResult::json),
        "ratio_to_bare": ratio,
    });
    let mut human = format!(
        "forward: {} clients, window {}, target {}: sent {sent}, confirmed {confirmed} in {window_seconds:.2}s = {confirmed_per_s:.0}/s; unanswered {unanswered}, duplicated answers {duplicates}\n\
         errors by code: {}; failures: {}\n\
         confirmation latency: {}\n\
         server: {batch_calls:.0} batch calls, {} entries per batch, CPU {}\n\
         {}",
        args.clients,
        args.window,
        if args.rate > 0.0 { format!("{:.0}/s", args.rate) } else { "unlimited".into() },
        stats::causes_line(&outcome.errors),
        stats::causes_line(&outcome.failures),
        outcome.latency.line(),
        report::or_unknown(entries_per_batch, |e| format!("{e:.2}")),
        scrape::cpu_text(server_cpu),
        measured.machine_line(),
    );
    if let Some(bare) = bare {
        human.push('\n');
        human.push_str(&bare.line());
        human.push_str(&format!(
            "\ngateway / bare SDK (messages/s): {}",
            report::or_unknown(ratio, |r| format!("{:.1}%", r * 100.0))
        ));
    }
    Report { ok, value, human }
}

pub struct BareResult {
    calls: u64,
    failed_calls: u64,
    messages: u64,
    failed_entries: u64,
    seconds: f64,
    calls_per_s: f64,
    messages_per_s: f64,
    concurrency: usize,
    latency: stats::Percentiles,
    errors: Causes,
}

impl BareResult {
    fn json(&self) -> serde_json::Value {
        json!({
            "concurrency": self.concurrency,
            "calls": self.calls,
            "failed_calls": self.failed_calls,
            "messages": self.messages,
            "failed_entries": self.failed_entries,
            "seconds": self.seconds,
            "calls_per_s": self.calls_per_s,
            "messages_per_s": self.messages_per_s,
            "call_latency": self.latency,
            "errors": self.errors,
        })
    }

    fn line(&self) -> String {
        format!(
            "bare SDK client ({} concurrent 10-entry SendMessageBatch): {} calls ({} failed) in {:.2}s = {:.0} calls/s, {:.0} messages/s; call latency {}; errors: {}",
            self.concurrency,
            self.calls,
            self.failed_calls,
            self.seconds,
            self.calls_per_s,
            self.messages_per_s,
            self.latency.line(),
            stats::causes_line(&self.errors)
        )
    }
}

async fn bare_sqs(args: &BareArgs) -> anyhow::Result<BareResult> {
    // Requests go to the endpoint only (the queue URL is a parameter of the JSON protocol).
    net::check_http_url(&args.endpoint)?;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&args.endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("loadtest", "loadtest", None, None, "loadtest"))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let client = aws_sdk_sqs::Client::new(&config);
    let body = Arc::new(format!("{{\"loadtest\":\"{}\"}}", "x".repeat(args.body_bytes.saturating_sub(16))));
    let calls = Arc::new(AtomicU64::new(0));
    let _progress = {
        let calls = calls.clone();
        Progress::start(args.quiet, move |elapsed| format!("bare-sqs {elapsed:>5.0}s calls {}", calls.load(Relaxed)))
    };
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration);
    let mut tasks = JoinSet::new();
    for t in 0..args.concurrency.max(1) {
        let (client, body, calls) = (client.clone(), body.clone(), calls.clone());
        let urls = args.queue_urls.clone();
        tasks.spawn(async move {
            let mut latency = stats::histogram();
            let (mut ok, mut failed, mut messages, mut failed_entries) = (0u64, 0u64, 0u64, 0u64);
            let mut errors = Causes::new();
            let mut i = t;
            // Bounded by time, and by a count no emulator reaches in a run.
            while Instant::now() < end && ok + failed < 10_000_000 {
                let entries: Vec<_> = (0..10)
                    .filter_map(|e| {
                        aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                            .id(e.to_string())
                            .message_body(body.as_str())
                            .build()
                            .ok()
                    })
                    .collect();
                let t0 = Instant::now();
                let response = client
                    .send_message_batch()
                    .queue_url(&urls[i % urls.len()])
                    .set_entries(Some(entries))
                    .send()
                    .await;
                i += 1;
                calls.fetch_add(1, Relaxed);
                match response {
                    Ok(output) => {
                        ok += 1;
                        stats::record(&mut latency, t0.elapsed().as_micros() as u64);
                        messages += output.successful().len() as u64;
                        failed_entries += output.failed().len() as u64;
                    }
                    Err(error) => {
                        failed += 1;
                        let cause = aws_sdk_sqs::error::DisplayErrorContext(&error).to_string();
                        stats::bump(&mut errors, &cause.chars().take(80).collect::<String>(), 1);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (ok, failed, messages, failed_entries, latency, errors)
        });
    }
    let mut result = BareResult {
        calls: 0,
        failed_calls: 0,
        messages: 0,
        failed_entries: 0,
        seconds: 0.0,
        calls_per_s: 0.0,
        messages_per_s: 0.0,
        concurrency: args.concurrency,
        latency: stats::Percentiles::default(),
        errors: Causes::new(),
    };
    let mut latency = stats::histogram();
    while let Some(Ok((ok, failed, messages, failed_entries, hist, errors))) = tasks.join_next().await {
        result.calls += ok;
        result.failed_calls += failed;
        result.messages += messages;
        result.failed_entries += failed_entries;
        let _ = latency.add(&hist);
        stats::merge(&mut result.errors, &errors);
    }
    result.seconds = started.elapsed().as_secs_f64();
    result.calls_per_s = result.calls as f64 / result.seconds;
    result.messages_per_s = result.messages as f64 / result.seconds;
    result.latency = stats::percentiles(&latency);
    Ok(result)
}

pub async fn run_bare(args: BareArgs) -> anyhow::Result<ExitCode> {
    let result = bare_sqs(&args).await?;
    let ok = result.failed_calls == 0 && result.failed_entries == 0 && result.calls > 0;
    Ok(report::finish(args.json, &result.line(), &result.json(), ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_gives_its_number_and_send_time() {
        assert_eq!(parse_id("lt-ab12cd34-3-17-1700000000000000000"), Some((17, 1_700_000_000_000_000_000)));
        assert_eq!(parse_id("someone-else's-id"), None);
    }

    #[test]
    fn the_clients_results_add_up() {
        let mut first = ClientResult { sent: 10, confirmed: 9, unanswered: 1, ..ClientResult::empty(None) };
        stats::bump(&mut first.errors, "queue_full", 1);
        stats::record(&mut first.latency, 2000);
        let second =
            ClientResult { sent: 5, confirmed: 5, duplicates: 2, ..ClientResult::empty(Some("client_eof".into())) };
        let mut connect_failures = Causes::new();
        stats::bump(&mut connect_failures, "connect_refused", 1);
        let outcome = Outcome::new(&[first, second], connect_failures, 2.0);
        assert_eq!((outcome.sent, outcome.confirmed, outcome.unanswered, outcome.duplicates), (15, 14, 1, 2));
        assert_eq!(stats::causes_line(&outcome.failures), "client_eof=1 connect_refused=1");
        assert_eq!(stats::causes_line(&outcome.errors), "queue_full=1");
        assert_eq!(outcome.latency.count, 1);
    }

    #[test]
    fn the_report_gives_entries_per_batch() {
        let cli = crate::tests::parse(&["forward", "--url", "ws://127.0.0.1:1/ws", "--rate", "100"])
            .expect("valid arguments");
        let crate::Command::Forward(args) = cli.command else { panic!("not forward") };
        let outcome = Outcome::new(
            &[ClientResult { sent: 200, confirmed: 200, ..ClientResult::empty(None) }],
            Causes::new(),
            2.0,
        );
        let measured = report::tests::measured_for_test(
            &[(scrape::BATCH_SUM, 0.0), (scrape::BATCH_COUNT, 0.0)],
            &[(scrape::BATCH_SUM, 200.0), (scrape::BATCH_COUNT, 25.0)],
        );
        let report = report(&args, &outcome, &measured, None);
        assert!(report.ok, "{}", report.human);
        assert_eq!(report.value["confirmed_per_s"], 100.0);
        assert_eq!(report.value["server"]["entries_per_batch"], 8.0);
        assert!(
            report
                .human
                .starts_with("forward: 5 clients, window 64, target 100/s: sent 200, confirmed 200 in 2.00s = 100/s;"),
            "{}",
            report.human
        );
        assert!(report.human.contains("server: 25 batch calls, 8.00 entries per batch, CPU "), "{}", report.human);
    }
}
