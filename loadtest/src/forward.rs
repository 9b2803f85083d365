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
    net, scrape,
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

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.clients > 0 && !args.types.is_empty(), "--clients and --types must not be empty");
    let targets = args.common.targets()?;
    let metrics_urls = args.common.metrics_urls(&targets)?;
    let http = crate::http_client();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let shared = Arc::new(Shared::default());
    let max_messages = if args.messages > 0 { args.messages } else { 10_000_000 };
    let per_client_rate = args.rate / args.clients as f64;
    let per_client_max = max_messages.div_ceil(args.clients as u64);
    let timeout = args.common.connect_timeout();
    let _progress = {
        let shared = shared.clone();
        let last = Mutex::new((0u64, 0.0f64));
        Progress::start(args.common.quiet, move |elapsed| {
            let confirmed = shared.confirmed.load(Relaxed);
            let mut last = last.lock().unwrap();
            let rate = (confirmed - last.0) as f64 / (elapsed - last.1).max(1e-3);
            *last = (confirmed, elapsed);
            format!(
                "forward {elapsed:>5.0}s sent {} confirmed {confirmed} ({rate:.0}/s) errors {}",
                shared.sent.load(Relaxed),
                shared.errors.load(Relaxed)
            )
        })
    };

    // Connect every client first, so the measured window is forwarding only.
    let mut sockets = Vec::new();
    let mut connect_failures = Causes::new();
    for c in 0..args.clients {
        let target = &targets[c % targets.len()];
        let url = target.ws_url(None);
        match net::open(target, &url, net::source_addr(c, args.common.source_addrs), timeout).await {
            Ok(ws) => sockets.push((c, ws)),
            Err(cause) => stats::bump(&mut connect_failures, &cause, 1),
        }
    }
    let before = scrape::scrape(&http, &metrics_urls).await;
    let cpu_before = scrape::machine_cpu();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration);
    let drain = Duration::from_secs_f64(args.drain_timeout);
    let pad = Arc::new("x".repeat(args.payload_bytes));
    let types = Arc::new(args.types.clone());
    let mut clients = JoinSet::new();
    for (c, ws) in sockets {
        let (shared, pad, types, run_id) = (shared.clone(), pad.clone(), types.clone(), run_id.clone());
        let window = args.window.clamp(1, 256);
        clients.spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let permits = Arc::new(Semaphore::new(window));
            let outstanding = Arc::new(AtomicU64::new(0));
            let (done_tx, done_rx) = tokio::sync::watch::channel(false);
            let reader = {
                let (permits, outstanding, shared) = (permits.clone(), outstanding.clone(), shared.clone());
                let mut done_rx = done_rx.clone();
                tokio::spawn(async move {
                    let mut out = ClientResult {
                        sent: 0,
                        confirmed: 0,
                        duplicates: 0,
                        errors: Causes::new(),
                        latency: stats::histogram(),
                        unanswered: 0,
                        failure: None,
                    };
                    let mut answered = SeqSet::default();
                    let mut deadline: Option<tokio::time::Instant> = None;
                    loop {
                        if *done_rx.borrow() {
                            if outstanding.load(Relaxed) == 0 {
                                break;
                            }
                            deadline.get_or_insert_with(|| tokio::time::Instant::now() + drain);
                        }
                        let bound = deadline.unwrap_or_else(|| (end + drain + Duration::from_secs(60)).into());
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
                })
            };
            let start = Instant::now();
            let mut sent = 0u64;
            let mut send_failure = None;
            while sent < per_client_max {
                if per_client_rate > 0.0 {
                    let at = start + Duration::from_secs_f64(sent as f64 / per_client_rate);
                    if at >= end {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                let permit = tokio::select! {
                    permit = permits.acquire() => permit,
                    () = tokio::time::sleep_until(end.into()) => break,
                };
                match permit {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                if Instant::now() >= end {
                    permits.add_permits(1);
                    break;
                }
                let kind = &types[(sent as usize + c) % types.len()];
                let message_id = format!("lt-{run_id}-{c}-{sent}-{}", stats::now_ns());
                let mut data = json!({"seq": sent, "client": c});
                if !pad.is_empty() {
                    data["pad"] = json!(*pad);
                }
                let frame = json!({"action": "forward", "type": kind, "message_id": message_id, "project_id": format!("lt-{run_id}"), "data": data});
                outstanding.fetch_add(1, Relaxed);
                if let Err(error) = sink.send(Message::text(frame.to_string())).await {
                    outstanding.fetch_sub(1, Relaxed);
                    send_failure = Some(net::ws_cause("send", &error));
                    break;
                }
                sent += 1;
                shared.sent.fetch_add(1, Relaxed);
            }
            let _ = done_tx.send(true);
            let mut out = reader.await.unwrap_or(ClientResult {
                sent: 0,
                confirmed: 0,
                duplicates: 0,
                errors: Causes::new(),
                latency: stats::histogram(),
                unanswered: 0,
                failure: Some("reader_panicked".into()),
            });
            out.sent = sent;
            if out.failure.is_none() {
                out.failure = send_failure;
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = sink.send(Message::Close(None)).await;
            })
            .await;
            out
        });
    }
    let mut results = Vec::new();
    while let Some(result) = clients.join_next().await {
        if let Ok(result) = result {
            results.push(result);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = scrape::scrape(&http, &metrics_urls).await;
    let machine =
        scrape::machine_json(&cpu_before, &scrape::machine_cpu(), scrape::delta(&before, &after, scrape::CPU), elapsed);
    drop(_progress);

    let (mut sent, mut confirmed, mut duplicates, mut unanswered) = (0u64, 0u64, 0u64, 0u64);
    let mut errors = Causes::new();
    let mut failures = connect_failures.clone();
    let mut latency = stats::histogram();
    for result in &results {
        sent += result.sent;
        confirmed += result.confirmed;
        duplicates += result.duplicates;
        unanswered += result.unanswered;
        stats::merge(&mut errors, &result.errors);
        let _ = latency.add(&result.latency);
        if let Some(failure) = &result.failure {
            stats::bump(&mut failures, failure, 1);
        }
    }
    let window_seconds = args.duration.min(elapsed);
    let confirmed_per_s = confirmed as f64 / window_seconds.max(1e-9);
    let latency = stats::percentiles(&latency);
    let entries_per_batch = scrape::entries_per_batch(&before, &after);
    let batch_calls = scrape::delta(&before, &after, scrape::BATCH_COUNT);
    let server_cpu = scrape::delta(&before, &after, scrape::CPU);

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
    let ratio = bare.as_ref().and_then(|b| (b.messages_per_s > 0.0).then(|| confirmed_per_s / b.messages_per_s));
    let ok = failures.is_empty() && errors.is_empty() && duplicates == 0 && unanswered == 0 && confirmed > 0;
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
        "errors": errors,
        "unanswered": unanswered,
        "duplicates": duplicates,
        "failures": failures,
        "latency": latency,
        "server": {
            "metrics_ok": before.ok && after.ok,
            "entries_per_batch": entries_per_batch,
            "batch_calls": batch_calls,
            "cpu_seconds": server_cpu,
            "cpu_us_per_forward": (confirmed > 0).then(|| server_cpu * 1e6 / confirmed as f64),
        },
        "machine": machine,
        "bare_sqs": bare.as_ref().map(BareResult::json),
        "ratio_to_bare": ratio,
    });
    let mut human = format!(
        "forward: {} clients, window {}, target {}: sent {sent}, confirmed {confirmed} in {window_seconds:.2}s = {confirmed_per_s:.0}/s; unanswered {unanswered}, duplicated answers {duplicates}\n\
         errors by code: {}; failures: {}\n\
         confirmation latency: {}\n\
         server: {batch_calls:.0} batch calls, {} entries per batch, CPU {}\n\
         machine CPU over the run: {}",
        args.clients,
        args.window,
        if args.rate > 0.0 { format!("{:.0}/s", args.rate) } else { "unlimited".into() },
        stats::causes_line(&errors),
        stats::causes_line(&failures),
        latency.line(),
        entries_per_batch.map_or("unknown".to_owned(), |e| format!("{e:.2}")),
        scrape::cpu_text(server_cpu),
        scrape::machine_line(&machine),
    );
    if let Some(bare) = &bare {
        human.push('\n');
        human.push_str(&bare.line());
        human.push_str(&format!(
            "\ngateway / bare SDK (messages/s): {}",
            ratio.map_or("unknown".to_owned(), |r| format!("{:.1}%", r * 100.0))
        ));
    }
    Ok(crate::finish(args.common.json, &human, &value, ok))
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
    Ok(crate::finish(args.json, &result.line(), &result.json(), ok))
}
