//! `connect`: open N connections (each subscribed to one of K projects by `?project_id=`) at a
//! rate, hold them, check every one still receives (one publication per project through the
//! publish API), close them; report the connect rate, failures by cause and the server's memory
//! and CPU from `/metrics`. Against Nchan (`--server nchan`) a connection subscribes on
//! /sub/{project}, the check publications are posted to /pub/{project}, and the server's memory
//! and CPU come from /proc of its `--server-pid`s.
//!
//! One process holds at most ~19,900 sockets (RLIMIT_NOFILE 20,000 here), so a large run is
//! spread over child processes (`--processes`, by default one per 15,000 connections): each
//! re-executes this binary as `connect-worker`, opens its share and reports JSON lines on its
//! stdout; this process coordinates, scrapes the server and publishes the check messages.

use std::{
    collections::BTreeMap,
    process::{ExitCode, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::{io::AsyncBufReadExt, sync::mpsc, task::JoinSet};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    net::{self, Target},
    report::{self, Report},
    scrape,
    server::{MemorySource, ServerArgs},
    stats::{self, Causes},
    tokens::TokenArgs,
    Common, Progress,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open in all.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Projects the connections subscribe to (connection i to project i mod K).
    #[arg(long, default_value_t = 10)]
    pub projects: usize,
    /// New connections per second over all processes (0: as fast as --concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Connection attempts in flight at once, per process.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Seconds to hold the connections once all are open.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Client processes (0: one per 15,000 connections).
    #[arg(long, default_value_t = 0)]
    pub processes: usize,
    /// Longest the opening may take, in seconds; what is not open by then counts as failed.
    #[arg(long, default_value_t = 120.0)]
    pub max_ramp: f64,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// One process's share of a run.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long)]
    pub worker_index: usize,
    #[arg(long)]
    pub worker_count: usize,
    #[arg(long)]
    pub connections: usize,
    #[arg(long)]
    pub projects: usize,
    /// This process's rate (connections/s; 0 = unlimited).
    #[arg(long)]
    pub rate: f64,
    #[arg(long)]
    pub concurrency: usize,
    #[arg(long)]
    pub run_id: String,
    #[arg(long)]
    pub max_ramp: f64,
    /// Hard bound of the whole worker, seconds.
    #[arg(long)]
    pub max_seconds: f64,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// What a worker reports.
#[derive(Debug, Serialize, Deserialize)]
// Externally tagged: an internally tagged enum is buffered before it is matched, and buffered
// numbers do not parse back as floats with serde_json's `arbitrary_precision` (which the gateway
// enables to pass client numbers on exactly).
#[serde(rename_all = "snake_case")]
enum Event {
    Progress { worker: usize, attempted: u64, connected: u64, failed: u64, dropped: u64, verified: u64 },
    Ramped { worker: usize, start_ns: u64, end_ns: u64, connected: u64, failed: u64 },
    Done { worker: usize, connected: u64, verified: u64, dropped: u64, failures: Causes, handshake: Vec<(u64, u64)> },
}

#[derive(Default)]
struct Counters {
    attempted: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    verified: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

pub fn project_id(run_id: &str, index: usize, projects: usize) -> String {
    format!("lt-{run_id}-{}", index % projects.max(1))
}

/// A child process: runs its share, reports JSON lines on stdout.
pub async fn worker_main(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let work = tokio::spawn(worker(args, tx));
    let mut out = std::io::stdout();
    while let Some(event) = rx.recv().await {
        use std::io::Write;
        let _ = writeln!(out, "{}", serde_json::to_string(&event)?);
        let _ = out.flush();
    }
    work.await??;
    Ok(ExitCode::SUCCESS)
}

async fn worker(args: WorkerArgs, events: mpsc::UnboundedSender<Event>) -> anyhow::Result<()> {
    let targets = Arc::new(args.common.targets()?);
    let me = args.worker_index;
    let count = args.worker_count.max(1);
    let mine: Vec<usize> = (me..args.connections).step_by(count).collect();
    // Every URL (and token) is made before the ramp, so signing does not slow what is measured.
    let signer = args.tokens.signer()?;
    let server = args.server.kind;
    let urls = mine
        .iter()
        .map(|&global| {
            let target = &targets[global % targets.len()];
            let project = project_id(&args.run_id, global, args.projects);
            let url = server.subscribe_url(target, &project);
            Ok(match &signer {
                Some(signer) => format!("{url}&token={}", signer.token(global, &project, &args.run_id)?),
                None => url,
            })
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    let counters = Arc::new(Counters::default());
    let failures = Arc::new(Mutex::new(Causes::new()));
    let handshake = Arc::new(Mutex::new(stats::histogram()));
    let started = Instant::now();
    let hard_deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.max_seconds);
    let ramp_deadline = started + Duration::from_secs_f64(args.max_ramp);
    let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let timeout = args.common.connect_timeout();

    let reporter = {
        let (counters, events) = (counters.clone(), events.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(250));
            loop {
                ticker.tick().await;
                let event = Event::Progress {
                    worker: me,
                    attempted: counters.attempted.load(Relaxed),
                    connected: counters.connected.load(Relaxed),
                    failed: counters.failed.load(Relaxed),
                    dropped: counters.dropped.load(Relaxed),
                    verified: counters.verified.load(Relaxed),
                };
                if events.send(event).is_err() {
                    break;
                }
            }
        })
    };

    let mut tasks = JoinSet::new();
    let marker = Arc::<str>::from(args.run_id.as_str());
    let mut not_attempted = 0u64;
    for (j, &global) in mine.iter().enumerate() {
        if args.rate > 0.0 {
            tokio::time::sleep_until((started + Duration::from_secs_f64(j as f64 / args.rate)).into()).await;
        }
        if Instant::now() > ramp_deadline {
            not_attempted = (mine.len() - j) as u64;
            break;
        }
        let permit = limit.clone().acquire_owned().await?;
        let target = targets[global % targets.len()].clone();
        let url = urls[j].clone();
        let source = net::source_addr(global, args.common.source_addrs);
        let (counters, failures, handshake, marker) =
            (counters.clone(), failures.clone(), handshake.clone(), marker.clone());
        tasks.spawn(async move {
            let t0 = Instant::now();
            let _ = counters.first_ns.compare_exchange(0, stats::now_ns(), Relaxed, Relaxed);
            counters.attempted.fetch_add(1, Relaxed);
            let opened = net::open_expecting(&target, &url, source, timeout, server.greeting()).await;
            counters.last_ns.fetch_max(stats::now_ns(), Relaxed);
            drop(permit);
            let mut ws = match opened {
                Ok(ws) => ws,
                Err(cause) => {
                    counters.failed.fetch_add(1, Relaxed);
                    stats::bump(&mut failures.lock().unwrap(), &cause, 1);
                    return;
                }
            };
            stats::record(&mut handshake.lock().unwrap(), t0.elapsed().as_micros() as u64);
            counters.connected.fetch_add(1, Relaxed);
            // Hold: answer pings (tungstenite does on read), wait for the check message.
            let outcome = loop {
                let next = tokio::time::timeout_at(hard_deadline, ws.next()).await;
                match next {
                    Err(_) => break Err("verify_timeout".to_owned()),
                    Ok(Some(Ok(Message::Text(text)))) if text.contains(&*marker) => break Ok(()),
                    Ok(Some(Ok(Message::Close(frame)))) => {
                        break Err(format!("dropped_close_{}", net::close_code(&Message::Close(frame))))
                    }
                    Ok(Some(Ok(_))) => continue,
                    Ok(Some(Err(error))) => break Err(net::ws_cause("dropped", &error)),
                    Ok(None) => break Err("dropped_eof".to_owned()),
                }
            };
            match outcome {
                Ok(()) => {
                    counters.verified.fetch_add(1, Relaxed);
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        let _ = ws.send(Message::Close(None)).await;
                        // Until the server's close answer (bounded by the timeout).
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                }
                Err(cause) => {
                    counters.dropped.fetch_add(1, Relaxed);
                    stats::bump(&mut failures.lock().unwrap(), &cause, 1);
                }
            }
        });
    }
    if not_attempted > 0 {
        stats::bump(&mut failures.lock().unwrap(), "not_attempted_ramp_timeout", not_attempted);
        counters.failed.fetch_add(not_attempted, Relaxed);
    }
    // Ramp done when every attempt has an outcome.
    let attempts = (mine.len() as u64).saturating_sub(not_attempted);
    while counters.connected.load(Relaxed) + counters.failed.load(Relaxed) - not_attempted < attempts
        && tokio::time::Instant::now() < hard_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = events.send(Event::Ramped {
        worker: me,
        start_ns: counters.first_ns.load(Relaxed),
        end_ns: counters.last_ns.load(Relaxed),
        connected: counters.connected.load(Relaxed),
        failed: counters.failed.load(Relaxed),
    });
    while tasks.join_next().await.is_some() {}
    reporter.abort();
    let failures = failures.lock().unwrap().clone();
    let handshake = stats::to_pairs(&handshake.lock().unwrap());
    let _ = events.send(Event::Done {
        worker: me,
        connected: counters.connected.load(Relaxed),
        verified: counters.verified.load(Relaxed),
        dropped: counters.dropped.load(Relaxed),
        failures,
        handshake,
    });
    Ok(())
}

/// What the coordinator knows so far.
#[derive(Default)]
struct Agg {
    progress: BTreeMap<usize, (u64, u64, u64, u64, u64)>,
    ramped: BTreeMap<usize, (u64, u64)>,
    done: BTreeMap<usize, (u64, u64, u64)>,
    failures: Causes,
    handshake: Vec<(u64, u64)>,
    lost_workers: usize,
}

impl Agg {
    fn totals(&self) -> (u64, u64, u64, u64, u64) {
        self.progress.values().fold((0, 0, 0, 0, 0), |a, p| (a.0 + p.0, a.1 + p.1, a.2 + p.2, a.3 + p.3, a.4 + p.4))
    }

    fn take(&mut self, event: Event) {
        match event {
            Event::Progress { worker, attempted, connected, failed, dropped, verified } => {
                self.progress.insert(worker, (attempted, connected, failed, dropped, verified));
            }
            Event::Ramped { worker, start_ns, end_ns, .. } => {
                self.ramped.insert(worker, (start_ns, end_ns));
            }
            Event::Done { worker, connected, verified, dropped, failures, handshake } => {
                let attempted = self.progress.get(&worker).map_or(0, |p| p.0);
                let failed = failures.values().sum::<u64>() - dropped;
                self.progress.insert(worker, (attempted, connected, failed, dropped, verified));
                self.done.insert(worker, (connected, verified, dropped));
                stats::merge(&mut self.failures, &failures);
                self.handshake.extend(handshake);
            }
        }
    }
}

impl Args {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.connections > 0 && self.projects > 0, "--connections and --projects must be positive");
        self.server.check(&self.common)?;
        anyhow::ensure!(
            self.server.kind.has_metrics()
                || (self.tokens.token_secret.is_none() && self.tokens.token_rsa_key.is_none()),
            "connection tokens are the gateway's: not with --server nchan"
        );
        Ok(())
    }
}

pub async fn run(args: Args, nofile: u64) -> anyhow::Result<ExitCode> {
    args.check()?;
    let targets = args.common.targets()?;
    let metrics_urls = args.server.metrics_urls(&args.common, &targets)?;
    let memory = args.server.memory_source();
    let http = crate::http_client();
    let processes = if args.processes == 0 { args.connections.div_ceil(15_000) } else { args.processes }.max(1);
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let max_seconds = args.max_ramp + args.hold + 60.0;
    let window = report::Window::open(&http, &metrics_urls).await;
    let agg = Arc::new(Mutex::new(Agg::default()));
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let mut children = start_workers(&args, processes, &run_id, max_seconds, tx)?;
    let collector = {
        let agg = agg.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                lock(&agg).take(event);
            }
        })
    };
    let progress = {
        let agg = agg.clone();
        let total = args.connections;
        Progress::start(args.common.quiet, move |elapsed| {
            let (attempted, connected, failed, dropped, verified) = lock(&agg).totals();
            let open = connected.saturating_sub(dropped).saturating_sub(verified);
            format!(
                "connect {elapsed:>5.0}s attempted {attempted}/{total} open {open} failed {failed} dropped {dropped} verified {verified}"
            )
        })
    };
    let bound = Instant::now() + Duration::from_secs_f64(max_seconds + 10.0);
    let workers_until = |enough: fn(&Agg) -> usize| {
        let (agg, collector) = (&agg, &collector);
        async move {
            while enough(&lock(agg)) < processes && Instant::now() < bound && !collector.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // 1. The ramp: until every process has opened its share.
    workers_until(|agg| agg.ramped.len()).await;
    let ramped_at = Instant::now();
    let at_ramp = scrape::scrape(&http, &metrics_urls).await;
    // 2. The hold.
    let held = hold(&http, &metrics_urls, memory, ramped_at, Duration::from_secs_f64(args.hold.max(0.0))).await;
    let held_for = ramped_at.elapsed().as_secs_f64();
    // 3. The check: every connection must receive one publication to its project.
    let (reported_subscribers, publish_errors) = verify(&http, &targets, &args, &run_id).await;
    // 4. Every process finishes (bounded).
    workers_until(|agg| agg.done.len()).await;
    for child in &mut children {
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let measured = window.close(&http, &metrics_urls).await;
    drop(progress);

    let mut agg = std::mem::take(&mut *lock(&agg));
    agg.lost_workers = processes - agg.done.len();
    let outcome = Outcome::new(agg, &publish_errors, reported_subscribers, processes, held_for);
    let server = ServerFigures::new(&args.server, &measured, &at_ramp, &held, outcome.connected);
    Ok(report(&args, nofile, &outcome, &server, &measured).print(args.common.json))
}

fn lock(agg: &Mutex<Agg>) -> std::sync::MutexGuard<'_, Agg> {
    agg.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the run's workers: in this process when there is one, else as child processes
/// reporting on their stdout. Their events go to `events`.
fn start_workers(
    args: &Args,
    processes: usize,
    run_id: &str,
    max_seconds: f64,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<Vec<tokio::process::Child>> {
    let per_rate = args.rate / processes as f64;
    if processes == 1 {
        let worker_args = WorkerArgs {
            common: args.common.clone(),
            worker_index: 0,
            worker_count: 1,
            connections: args.connections,
            projects: args.projects,
            rate: per_rate,
            concurrency: args.concurrency,
            run_id: run_id.to_owned(),
            max_ramp: args.max_ramp,
            max_seconds,
            tokens: args.tokens.clone(),
            server: args.server.clone(),
        };
        tokio::spawn(async move {
            if let Err(error) = worker(worker_args, events).await {
                eprintln!("loadtest: worker: {error:#}");
            }
        });
        return Ok(Vec::new());
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut children = Vec::new();
    for index in 0..processes {
        let mut command = tokio::process::Command::new(&exe);
        command.arg("connect-worker");
        for url in &args.common.urls {
            command.arg("--url").arg(url);
        }
        command
            .arg("--source-addrs")
            .arg(args.common.source_addrs.to_string())
            .arg("--connect-timeout")
            .arg(args.common.connect_timeout.to_string())
            .arg("--worker-index")
            .arg(index.to_string())
            .arg("--worker-count")
            .arg(processes.to_string())
            .arg("--connections")
            .arg(args.connections.to_string())
            .arg("--projects")
            .arg(args.projects.to_string())
            .arg("--rate")
            .arg(per_rate.to_string())
            .arg("--concurrency")
            .arg(args.concurrency.to_string())
            .arg("--run-id")
            .arg(run_id)
            .arg("--max-ramp")
            .arg(args.max_ramp.to_string())
            .arg("--max-seconds")
            .arg(max_seconds.to_string())
            .args(args.tokens.to_args())
            .args(args.server.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().context("starting a worker process")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let events = events.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(event) = serde_json::from_str::<Event>(&line) {
                    if events.send(event).is_err() {
                        break;
                    }
                }
            }
        });
        children.push(child);
    }
    Ok(children)
}

/// Holds the connections for `hold` from `ramped_at`; the server's memory is sampled after a
/// settle and then every 5 s, and the sample with the most memory returned.
async fn hold(
    http: &reqwest::Client,
    metrics_urls: &[String],
    memory: MemorySource,
    ramped_at: Instant,
    hold: Duration,
) -> scrape::Sample {
    let hold_end = ramped_at + hold;
    tokio::time::sleep(hold.min(Duration::from_secs(2))).await;
    let mut held = scrape::scrape(http, metrics_urls).await;
    while Instant::now() + Duration::from_secs(5) < hold_end {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let sample = scrape::scrape(http, metrics_urls).await;
        if sample.get(memory.series()) > held.get(memory.series()) {
            held = sample;
        }
    }
    tokio::time::sleep_until(hold_end.into()).await;
    held
}

/// One publication per project through each instance's publish API: the subscribers the
/// servers say it reached, and the publications that failed.
async fn verify(http: &reqwest::Client, targets: &[Target], args: &Args, run_id: &str) -> (u64, Causes) {
    let mut reported_subscribers = 0u64;
    let mut publish_errors = Causes::new();
    for target in net::distinct_instances(targets) {
        for k in 0..args.projects {
            let project = project_id(run_id, k, args.projects);
            let body = json!({"project_id": project, "type": "loadtest_verify", "data": {"verify": run_id}});
            let request = args.server.kind.publish_request(http, target, &project).json(&body);
            match crate::fanout::http_publish(request, args.common.api_key.as_deref()).await {
                Ok(subscribers) => reported_subscribers += subscribers,
                Err(cause) => stats::bump(&mut publish_errors, &cause, 1),
            }
        }
    }
    (reported_subscribers, publish_errors)
}

/// The workers' figures put together.
struct Outcome {
    processes: usize,
    attempted: u64,
    connected: u64,
    /// Connections that never opened (a drop or a missed check message is not one).
    connect_failures: u64,
    dropped: u64,
    verified: u64,
    reported_subscribers: u64,
    /// Every cause: the workers', the check publications' (`verify_publish_`), lost workers.
    failures: Causes,
    ramp_seconds: f64,
    handshake: stats::Percentiles,
    held_for: f64,
}

impl Outcome {
    fn new(agg: Agg, publish_errors: &Causes, reported_subscribers: u64, processes: usize, held_for: f64) -> Outcome {
        let (attempted, connected, _failed, dropped, verified) = agg.totals();
        let connect_failures: u64 = agg
            .failures
            .iter()
            .filter(|(cause, _)| !cause.starts_with("dropped") && *cause != "verify_timeout")
            .map(|(_, n)| n)
            .sum();
        let start_ns = agg.ramped.values().map(|r| r.0).filter(|&ns| ns > 0).min().unwrap_or(0);
        let end_ns = agg.ramped.values().map(|r| r.1).max().unwrap_or(0);
        let mut handshake = stats::histogram();
        stats::add_pairs(&mut handshake, &agg.handshake);
        let mut failures = agg.failures;
        stats::merge(&mut failures, &publish_errors.iter().map(|(k, v)| (format!("verify_publish_{k}"), *v)).collect());
        if agg.lost_workers > 0 {
            stats::bump(&mut failures, "worker_process_lost", agg.lost_workers as u64);
        }
        Outcome {
            processes,
            attempted,
            connected,
            connect_failures,
            dropped,
            verified,
            reported_subscribers,
            failures,
            ramp_seconds: end_ns.saturating_sub(start_ns) as f64 / 1e9,
            handshake: stats::percentiles(&handshake),
            held_for,
        }
    }
}

/// The server's side: memory before, held and after, CPU over the run and over the ramp.
struct ServerFigures {
    memory: MemorySource,
    memory_before: f64,
    memory_held: f64,
    memory_after: f64,
    per_connection: Option<f64>,
    /// None without /metrics (Nchan's count is not read).
    active_held: Option<f64>,
    fds_held: f64,
    cpu_total: f64,
    cpu_ramp: f64,
    closed: Causes,
}

impl ServerFigures {
    fn new(
        server: &ServerArgs,
        measured: &report::Measured,
        at_ramp: &scrape::Sample,
        held: &scrape::Sample,
        connected: u64,
    ) -> Self {
        let memory = server.memory_source();
        let memory_before = measured.before.get(memory.series());
        let memory_held = held.get(memory.series());
        ServerFigures {
            memory,
            memory_before,
            memory_held,
            memory_after: measured.after.get(memory.series()),
            per_connection: (connected > 0 && measured.before.ok && held.ok)
                .then(|| (memory_held - memory_before) / connected as f64),
            active_held: server.kind.has_metrics().then(|| held.get(scrape::ACTIVE)),
            fds_held: held.get(scrape::FDS),
            cpu_total: measured.server_cpu(),
            cpu_ramp: scrape::delta(&measured.before, at_ramp, scrape::CPU),
            closed: scrape::closed_by_code(&measured.before, &measured.after),
        }
    }
}

fn report(args: &Args, nofile: u64, outcome: &Outcome, server: &ServerFigures, measured: &report::Measured) -> Report {
    let Outcome {
        processes,
        connected,
        connect_failures,
        dropped,
        verified,
        reported_subscribers,
        ramp_seconds,
        held_for,
        ..
    } = *outcome;
    let connect_rate = report::per_second(connected, ramp_seconds);
    let ok = connected == args.connections as u64
        && verified == connected
        && dropped == 0
        && outcome.failures.is_empty()
        && reported_subscribers == connected;
    let value = json!({
        "scenario": "connect",
        "ok": ok,
        "connections": args.connections,
        "projects": args.projects,
        "processes": processes,
        "source_addrs": args.common.source_addrs,
        "target_rate": args.rate,
        "nofile_limit": nofile,
        "attempted": outcome.attempted,
        "connected": connected,
        "failed": connect_failures,
        "dropped_during_hold": dropped,
        "verified": verified,
        "verify_subscribers_reported": reported_subscribers,
        "failures": outcome.failures,
        "ramp_seconds": ramp_seconds,
        "connect_rate_per_s": connect_rate,
        "handshake_latency": outcome.handshake,
        "held_seconds": held_for,
        "machine": measured.machine,
        "server": {
            "metrics_ok": measured.metrics_ok(),
            server.memory.field("before_bytes"): server.memory_before,
            server.memory.field("held_bytes"): server.memory_held,
            server.memory.field("after_bytes"): server.memory_after,
            server.memory.field("bytes_per_connection"): server.per_connection,
            "active_connections_held": server.active_held,
            "open_fds_held": server.fds_held,
            "cpu_seconds_run": server.cpu_total,
            "cpu_seconds_ramp": server.cpu_ramp,
            "cpu_us_per_connection_ramp": (connected > 0).then(|| server.cpu_ramp * 1e6 / connected as f64),
            "closed_by_code": server.closed,
        },
    });
    let human = format!(
        "connect: {connected}/{} connected over {processes} process(es) in {ramp_seconds:.2}s = {connect_rate:.0} conn/s; failed {connect_failures}, dropped during hold {dropped}, verified {verified} (server reported {reported_subscribers} subscribers)\n\
         failures: {}\n\
         handshake latency: {}\n\
         held {held_for:.1}s; server {} {:.1} MiB -> {:.1} MiB held -> {:.1} MiB after = {} per connection; active {} fds {}\n\
         server CPU: {} over the run, {} during the ramp\n\
         server closes: {}\n\
         {}",
        args.connections,
        stats::causes_line(&outcome.failures),
        outcome.handshake.line(),
        server.memory.label(),
        report::mib(server.memory_before),
        report::mib(server.memory_held),
        report::mib(server.memory_after),
        report::or_unknown(server.per_connection, |b| format!("{:.0} B ({:.2} KiB)", b, b / 1024.0)),
        report::or_unknown(server.active_held, |active| active.to_string()),
        server.fds_held,
        scrape::cpu_text(server.cpu_total),
        scrape::cpu_text(server.cpu_ramp),
        stats::causes_line(&server.closed),
        measured.machine_line(),
    );
    Report { ok, value, human }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(causes: &[(&str, u64)]) -> Causes {
        causes.iter().map(|&(cause, n)| (cause.to_owned(), n)).collect()
    }

    /// Two workers: one opened 3 (one dropped during the hold), the other 2 of 3 (one refused).
    fn two_workers() -> Agg {
        let mut agg = Agg::default();
        for (worker, start_ns, end_ns) in [(0, 1_000_000_000, 1_500_000_000), (1, 1_100_000_000, 2_000_000_000)] {
            agg.take(Event::Progress { worker, attempted: 3, connected: 0, failed: 0, dropped: 0, verified: 0 });
            agg.take(Event::Ramped { worker, start_ns, end_ns, connected: 0, failed: 0 });
        }
        agg.take(Event::Done {
            worker: 0,
            connected: 3,
            verified: 2,
            dropped: 1,
            failures: failures(&[("dropped_eof", 1)]),
            handshake: vec![(1000, 3)],
        });
        agg.take(Event::Done {
            worker: 1,
            connected: 2,
            verified: 2,
            dropped: 0,
            failures: failures(&[("connect_refused", 1)]),
            handshake: vec![(3000, 2)],
        });
        agg
    }

    #[test]
    fn the_workers_reports_add_up() {
        assert_eq!(two_workers().totals(), (6, 5, 1, 1, 4));
        let outcome = Outcome::new(two_workers(), &failures(&[("http_503", 1)]), 5, 2, 10.0);
        assert_eq!((outcome.attempted, outcome.connected, outcome.dropped, outcome.verified), (6, 5, 1, 4));
        assert_eq!(outcome.connect_failures, 1, "a drop during the hold is not a connect failure");
        assert_eq!(outcome.ramp_seconds, 1.0, "from the first worker's first attempt to the last handshake");
        assert_eq!(outcome.handshake.count, 5);
        assert_eq!(stats::causes_line(&outcome.failures), "connect_refused=1 dropped_eof=1 verify_publish_http_503=1");
    }

    #[test]
    fn a_lost_worker_is_a_failure() {
        let mut agg = two_workers();
        agg.lost_workers = 1;
        let outcome = Outcome::new(agg, &Causes::new(), 5, 3, 10.0);
        assert_eq!(outcome.failures.get("worker_process_lost"), Some(&1));
    }

    /// The report of a run of 5 connections, all verified, whose server grew by 8 KiB each in
    /// the series `memory` between before and held.
    fn report_of_five(extra_args: &[&str], memory: &str) -> Report {
        let cli = crate::tests::parse(
            &[&["connect", "--url", "ws://127.0.0.1:1/ws", "--connections", "5"], extra_args].concat(),
        )
        .expect("valid arguments");
        let crate::Command::Connect(args) = cli.command else { panic!("not connect") };
        let mut agg = two_workers();
        agg.failures.clear();
        let outcome = Outcome { dropped: 0, verified: 5, ..Outcome::new(agg, &Causes::new(), 5, 2, 10.0) };
        let measured = report::tests::measured_for_test(&[(memory, 10_485_760.0)], &[(memory, 10_485_760.0)]);
        let held = scrape::Sample {
            series: [(memory.to_owned(), 10_485_760.0 + 5.0 * 8192.0), (scrape::FDS.to_owned(), 12.0)]
                .into_iter()
                .collect(),
            ok: true,
        };
        let server = ServerFigures::new(&args.server, &measured, &scrape::Sample::default(), &held, outcome.connected);
        report(&args, 20_000, &outcome, &server, &measured)
    }

    #[test]
    fn the_report_gives_memory_per_connection() {
        let report = report_of_five(&[], scrape::RSS);
        assert!(report.ok, "{}", report.human);
        assert_eq!(report.value["server"]["rss_bytes_per_connection"], 8192.0);
        assert_eq!(report.value["connect_rate_per_s"], 5.0);
        let line = report.human.lines().nth(3).expect("the memory line");
        assert!(
            line.starts_with(
                "held 10.0s; server RSS 10.0 MiB -> 10.0 MiB held -> 10.0 MiB after = 8192 B (8.00 KiB) per connection"
            ),
            "{line}"
        );
    }

    #[test]
    fn nchan_takes_no_connection_tokens() {
        let args = |extra: &[&str]| {
            let cli = crate::tests::parse(&[&["connect", "--url", "ws://127.0.0.1:1/"], extra].concat())
                .expect("valid arguments");
            let crate::Command::Connect(args) = cli.command else { panic!("not connect") };
            args
        };
        assert!(args(&["--server", "nchan", "--server-pid", "1"]).check().is_ok());
        let error =
            args(&["--server", "nchan", "--server-pid", "1", "--token-secret", "s"]).check().expect_err("token");
        assert!(format!("{error:#}").contains("tokens"), "{error:#}");
        assert!(args(&["--token-secret", "s"]).check().is_ok(), "the gateway takes them");
    }

    #[test]
    fn nchans_memory_is_its_processes_pss() {
        let report = report_of_five(&["--server", "nchan", "--server-pid", "1"], scrape::PSS);
        assert!(report.ok, "{}", report.human);
        assert_eq!(report.value["server"]["pss_bytes_per_connection"], 8192.0);
        assert!(report.value["server"].get("rss_bytes_per_connection").is_none(), "{}", report.value);
        assert!(report.value["server"]["active_connections_held"].is_null(), "Nchan's is not read");
        let line = report.human.lines().nth(3).expect("the memory line");
        assert_eq!(
            line,
            "held 10.0s; server PSS 10.0 MiB -> 10.0 MiB held -> 10.0 MiB after = 8192 B (8.00 KiB) per connection; \
             active unknown fds 12"
        );
    }
}
