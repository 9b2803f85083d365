//! `abuse`: the floods of the limits issue against a running server, one phase after another,
//! while well-behaved probe clients measure what the others feel.
//!
//! Phases (each `--phase-secs` long, with a quiet phase before the first and after the last):
//! - `ping_flood`: one connection writes WebSocket pings as fast as the socket takes them and
//!   never reads;
//! - `over_budget`: `--flooders` connections each send `ping` requests at `--flood-rate` a second
//!   (meant to be over CLIENT_RATE_PER_SECOND) and read their answers;
//! - `slowloris`: `--slowloris` sockets start an upgrade and add a header line a second, never
//!   ending the head; each one the server closes is opened again.
//!
//! Throughout, `--probes` clients send a `ping` request every 200 ms (within any budget of 5 a
//! second or more) and one of them reconnects every 200 ms: round trips and connect times per phase. The server's
//! resident memory is sampled every 100 ms; the summary gives it before, at the peak of and
//! after each phase, with the limit refusals and closes the phase caused. Loopback only; every
//! loop ends with its phase.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::{net, report, scrape, stats, Common};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Seconds each phase (and the quiet phases around them) lasts.
    #[arg(long, default_value_t = 10)]
    pub phase_secs: u64,
    /// Well-behaved clients measuring round trips throughout.
    #[arg(long, default_value_t = 10)]
    pub probes: usize,
    /// Connections of the over-budget phase.
    #[arg(long, default_value_t = 1000)]
    pub flooders: usize,
    /// Requests a second each flooder sends.
    #[arg(long, default_value_t = 50)]
    pub flood_rate: u64,
    /// Sockets of the slowloris phase.
    #[arg(long, default_value_t = 500)]
    pub slowloris: usize,
}

/// How often a probe asks (and probe 0 reconnects).
const PROBE_INTERVAL: Duration = Duration::from_millis(200);

const PHASES: [&str; 5] = ["quiet_before", "ping_flood", "over_budget", "slowloris", "quiet_after"];

/// What the probes saw in one phase.
struct PhaseProbe {
    round_trips: Histogram<u64>,
    connects: Histogram<u64>,
    failures: u64,
}

/// Shared between the probes and the phase driver: which phase runs, and its measurements.
struct Probes {
    phase: AtomicU64,
    by_phase: Mutex<Vec<PhaseProbe>>,
    stop: AtomicBool,
}

impl Probes {
    fn record(&self, connect: bool, micros: Option<u64>) {
        let phase = self.phase.load(Ordering::Relaxed) as usize;
        let mut by_phase = self.by_phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let probe = &mut by_phase[phase];
        match (micros, connect) {
            (Some(micros), false) => stats::record(&mut probe.round_trips, micros),
            (Some(micros), true) => stats::record(&mut probe.connects, micros),
            (None, _) => probe.failures += 1,
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let targets = args.common.targets()?;
    let target = targets.first().cloned().ok_or_else(|| anyhow::anyhow!("--url is required"))?;
    let metrics_urls = args.common.metrics_urls(&targets)?;
    let http = crate::http_client();
    net::raise_nofile();
    let phase = Duration::from_secs(args.phase_secs.max(1));
    let probes = Arc::new(Probes {
        phase: AtomicU64::new(0),
        by_phase: Mutex::new(
            PHASES
                .iter()
                .map(|_| PhaseProbe { round_trips: stats::histogram(), connects: stats::histogram(), failures: 0 })
                .collect(),
        ),
        stop: AtomicBool::new(false),
    });
    let timeout = args.common.connect_timeout();
    let mut probe_tasks = Vec::new();
    for index in 0..args.probes.max(1) {
        let (probes, target) = (probes.clone(), target.clone());
        probe_tasks.push(tokio::spawn(async move { probe(index, &target, timeout, &probes).await }));
    }

    let mut lines = Vec::new();
    let mut results = Vec::new();
    for (index, name) in PHASES.iter().enumerate() {
        probes.phase.store(index as u64, Ordering::Relaxed);
        let before = scrape::scrape(&http, &metrics_urls).await;
        let sampling = RssSampler::start(http.clone(), metrics_urls.clone());
        let deadline = Instant::now() + phase;
        match *name {
            "ping_flood" => ping_flood(&target, deadline).await,
            "over_budget" => over_budget(&target, args.flooders, args.flood_rate, timeout, deadline).await,
            "slowloris" => slowloris(&target, args.slowloris, deadline).await,
            _ => tokio::time::sleep_until(deadline.into()).await,
        }
        let peak = sampling.stop().await;
        // The phase's sockets are gone; give the server a moment to let go of them.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = scrape::scrape(&http, &metrics_urls).await;
        let refusals: Vec<String> = after
            .labelled("agenticai_ws_limit_refusals_total")
            .into_iter()
            .map(|(label, value)| {
                let grown = value - before.get(&format!("agenticai_ws_limit_refusals_total{{{label}}}"));
                (label, grown)
            })
            .filter(|(_, value)| *value > 0.0)
            .map(|(label, value)| format!("{}={value}", label.trim_start_matches("limit=").trim_matches('"')))
            .collect();
        let closes = scrape::closed_by_code(&before, &after);
        let by_phase = probes.by_phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let seen = &by_phase[index];
        let (round_trips, connects) = (stats::percentiles(&seen.round_trips), stats::percentiles(&seen.connects));
        lines.push(format!(
            "{name:<13} RSS {:.1} -> peak {:.1} -> {:.1} MiB | probe ping {} | probe connect {} | probe failures {} | refusals: {} | closes: {:?}",
            report::mib(before.get(scrape::RSS)),
            report::mib(peak.max(before.get(scrape::RSS))),
            report::mib(after.get(scrape::RSS)),
            round_trips.line(),
            connects.line(),
            seen.failures,
            if refusals.is_empty() { "none".to_owned() } else { refusals.join(" ") },
            closes,
        ));
        results.push(json!({
            "phase": name,
            "rss_before_bytes": before.get(scrape::RSS),
            "rss_peak_bytes": peak.max(before.get(scrape::RSS)),
            "rss_after_bytes": after.get(scrape::RSS),
            "probe_round_trip_us": round_trips,
            "probe_connect_us": connects,
            "probe_failures": seen.failures,
            "refusals": refusals,
            "closes": closes,
        }));
    }
    probes.stop.store(true, Ordering::Relaxed);
    for task in probe_tasks {
        let _ = task.await;
    }
    let failures: u64 =
        probes.by_phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().map(|p| p.failures).sum();
    lines.push(format!("probe requests or connects that failed: {failures}"));
    let value = json!({"scenario": "abuse", "phases": results, "probe_failures": failures});
    Ok(report::finish(args.common.json, &lines.join("\n"), &value, failures == 0))
}

/// A well-behaved client: a `ping` request every 200 ms; probe 0 also reconnects each time.
async fn probe(index: usize, target: &net::Target, timeout: Duration, probes: &Probes) {
    let url = target.ws_url(None);
    let mut ws = None;
    let mut last_reconnect = Instant::now();
    while !probes.stop.load(Ordering::Relaxed) {
        if ws.is_none() || (index == 0 && last_reconnect.elapsed() >= PROBE_INTERVAL) {
            let started = Instant::now();
            match net::open(target, &url, None, timeout).await {
                Ok(opened) => {
                    probes.record(true, Some(started.elapsed().as_micros() as u64));
                    ws = Some(opened);
                }
                Err(_) => probes.record(true, None),
            }
            last_reconnect = Instant::now();
        }
        if let Some(socket) = ws.as_mut() {
            let started = Instant::now();
            let answered = async {
                socket.send(Message::text(r#"{"action":"ping"}"#)).await.ok()?;
                loop {
                    match socket.next().await {
                        Some(Ok(Message::Text(text))) if text.contains("\"pong\"") => return Some(()),
                        Some(Ok(_)) => continue,
                        _ => return None,
                    }
                }
            };
            match tokio::time::timeout(timeout, answered).await {
                Ok(Some(())) => probes.record(false, Some(started.elapsed().as_micros() as u64)),
                _ => {
                    probes.record(false, None);
                    ws = None;
                }
            }
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Upgrades a raw socket (no client library: nothing reads what the server sends).
async fn raw_upgrade(target: &net::Target) -> std::io::Result<tokio::net::TcpStream> {
    let mut stream = tokio::net::TcpStream::connect(target.addr).await?;
    stream.write_all(upgrade_head(target).as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(stream)
}

fn upgrade_head(target: &net::Target) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.addr
    )
}

/// One connection writing masked pings until the server stops taking them or the phase ends;
/// reconnects when the server closes it (it should: 3509).
async fn ping_flood(target: &net::Target, deadline: Instant) {
    const PING: [u8; 10] = [0x89, 0x84, 1, 2, 3, 4, b'p' ^ 1, b'i' ^ 2, b'n' ^ 3, b'g' ^ 4];
    let burst: Vec<u8> = PING.iter().copied().cycle().take(PING.len() * 1000).collect();
    while Instant::now() < deadline {
        let Ok(mut stream) = raw_upgrade(target).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while Instant::now() < deadline {
            match tokio::time::timeout_at(deadline.into(), stream.write_all(&burst)).await {
                Ok(Ok(())) => continue,
                _ => break,
            }
        }
    }
}

/// `count` connections, each sending `rate` ping requests a second and reading the answers.
async fn over_budget(target: &net::Target, count: usize, rate: u64, timeout: Duration, deadline: Instant) {
    let url = target.ws_url(None);
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let (target, url) = (target.clone(), url.clone());
            tokio::spawn(async move {
                let Ok(ws) = net::open(&target, &url, None, timeout).await else { return };
                let (mut sink, mut stream) = ws.split();
                let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
                let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
                while Instant::now() < deadline {
                    ticker.tick().await;
                    if sink.send(Message::text(r#"{"action":"ping"}"#)).await.is_err() {
                        break;
                    }
                }
                let _ = sink.close().await;
                reader.abort();
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// `count` sockets sending an upgrade's head but its last line, then one more valid header
/// line a second, never ending it; each one closed is opened again.
async fn slowloris(target: &net::Target, count: usize, deadline: Instant) {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let head = upgrade_head(&target);
                let partial = head.strip_suffix("\r\n").unwrap_or(&head).as_bytes().to_vec();
                while Instant::now() < deadline {
                    let Ok(mut stream) = tokio::net::TcpStream::connect(target.addr).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    if stream.write_all(&partial).await.is_err() {
                        continue;
                    }
                    let mut sink = [0u8; 512];
                    while Instant::now() < deadline {
                        if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                            break;
                        }
                        // A line a second: the read times out unless the server answered or closed.
                        let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut sink)).await;
                        if let Ok(Ok(0) | Err(_)) = read {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// The server's resident memory, sampled every 100 ms until stopped: the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<f64>,
}

impl RssSampler {
    fn start(http: reqwest::Client, urls: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak: f64 = 0.0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(scrape::scrape(&http, &urls).await.get(scrape::RSS));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        });
        RssSampler { stop, task }
    }

    async fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or(0.0)
    }
}
