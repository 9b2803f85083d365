//! `loadtest`: a load generator for a running agenticai-websocket instance (loopback only).
//!
//! Scenarios (see `loadtest SCENARIO --help`):
//! - `connect`: N subscribed connections at a given rate, held, verified, closed; connect rate,
//!   failures by cause, server memory per connection and CPU.
//! - `fanout`: S subscribers over K projects, publishers at a target rate (HTTP or WebSocket);
//!   deliveries/s, delivery latency percentiles, lost and duplicated messages, server CPU per
//!   delivery.
//! - `forward`: C clients forwarding at a target rate; confirmed forwards/s, confirmation latency,
//!   errors by code, SQS entries per batch; optionally a bare SDK client against the same
//!   emulator for comparison (`bare-sqs` alone does only that part).
//! - `streams`: S agent streams of R appends/s, V viewers each, against the same tokens sent as
//!   plain publications: frames and bytes per viewer, server CPU per append, append-to-screen
//!   latency, exactness; a late joiner's snapshot of a large stream.
//! - `abuse`: a ping flood, connections over their rate budget, slowloris sockets, one after the
//!   other, with probe clients measuring round trips and connects and the server's memory
//!   sampled before, during and after each.
//!
//! `connect` and `fanout` also drive Nchan (`--server nchan`), for side-by-side figures; `server`
//! holds what differs between the two servers.
//!
//! Each scenario's `run` reads as its phases (set-up, the measured window, the checks, the
//! report); `report` holds what they share: the measured window (metrics and machine CPU before
//! and after), the printing of a result, and the summary's number formats. The pure parts (the
//! tallies, the reports built from them, the statistics) have unit tests beside them.
//!
//! Every run is bounded in count and in time. A live progress line goes to stderr, the summary to
//! stdout (with `--json`, the JSON result goes to stdout and the summary to stderr). The exit
//! status is 1 when anything was lost, duplicated or failed, 2 on a usage or set-up error.

mod abuse;
mod connect;
mod fanout;
mod forward;
mod net;
mod report;
mod scrape;
mod server;
mod stats;
mod streams;
mod tokens;

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadtest", version, about = "Load generator for agenticai-websocket (loopback targets only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open N subscribed connections at a rate, hold them, verify each still receives, close.
    Connect(connect::Args),
    /// Subscribers over projects, publishers at a rate: throughput, latency, loss, duplicates.
    Fanout(fanout::Args),
    /// Agent streams against the same tokens as publications: CPU per append, frames, latency.
    Streams(streams::Args),
    /// Clients forwarding to the agent queues: confirmed/s, latency, errors, entries per batch.
    Forward(forward::Args),
    /// A bare aws-sdk-sqs client sending 10-entry SendMessageBatch calls (the reference figure).
    BareSqs(forward::BareArgs),
    /// Floods (pings, requests over budget, slowloris) while probes measure the others' latency.
    Abuse(abuse::Args),
    /// (internal) one child process of a multi-process `connect` run.
    #[command(hide = true)]
    ConnectWorker(connect::WorkerArgs),
}

/// Options every scenario has.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    /// WebSocket URL of a running instance, e.g. ws://127.0.0.1:8080/ws. Repeat it to spread the
    /// clients round-robin over several instances. Loopback addresses only.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Prometheus URL(s) to scrape; default http://HOST:PORT/metrics of each distinct --url.
    #[arg(long = "metrics-url")]
    pub metrics_urls: Vec<String>,
    /// Print the result as JSON on stdout (the human summary then goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Spread client connections over this many source addresses, 127.0.0.2, 127.0.0.3, ...
    /// (0: the kernel's choice, 127.0.0.1).
    #[arg(long, default_value_t = 0)]
    pub source_addrs: u8,
    /// Seconds one connection attempt (TCP, upgrade, greeting) may take.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Bearer key for the publish API (needed when the server sets PUBLISH_API_KEYS).
    #[arg(long, env = "LOADTEST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// PID of a server process on this machine: its CPU seconds are then read from /proc (10 ms
    /// resolution) instead of /metrics (whole seconds). Repeatable, summed.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl Common {
    pub fn targets(&self) -> anyhow::Result<Vec<net::Target>> {
        self.urls.iter().map(|url| net::Target::parse(url)).collect()
    }

    pub fn metrics_urls(&self, targets: &[net::Target]) -> anyhow::Result<Vec<String>> {
        let urls = if self.metrics_urls.is_empty() {
            let mut urls: Vec<String> = targets.iter().map(|t| format!("{}/metrics", t.http_base())).collect();
            urls.dedup();
            urls.sort();
            urls.dedup();
            urls
        } else {
            self.metrics_urls.clone()
        };
        for url in &urls {
            net::check_http_url(url)?;
        }
        Ok(urls)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout.max(0.1))
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(256)
        .build()
        .expect("an HTTP client")
}

/// The live progress line: `line()` every second on stderr, until the handle is dropped.
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    tty: bool,
}

impl Progress {
    pub fn start<F>(quiet: bool, line: F) -> Progress
    where
        F: Fn(f64) -> String + Send + Sync + 'static,
    {
        let tty = std::io::stderr().is_terminal();
        if quiet {
            return Progress { task: None, tty };
        }
        let line = Arc::new(line);
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            // Bounded by the scenario, which drops (aborts) it; and by this cap.
            for _ in 0..86_400 {
                ticker.tick().await;
                let text = line(started.elapsed().as_secs_f64());
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r\x1b[2K{text}");
                } else {
                    let _ = writeln!(err, "{text}");
                }
                let _ = err.flush();
            }
        });
        Progress { task: Some(task), tty }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            if self.tty {
                eprint!("\r\x1b[2K");
            }
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let nofile = net::raise_nofile();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadtest: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let processes = |common: &Common, server: Option<&server::ServerArgs>| scrape::ServerProcesses {
        pids: common.server_pids.clone(),
        memory: server.is_some_and(|server| server.memory_source() == server::MemorySource::Pss),
    };
    let processes = match &cli.command {
        Command::Connect(args) => processes(&args.common, Some(&args.server)),
        Command::Fanout(args) => processes(&args.common, Some(&args.server)),
        Command::Streams(args) => processes(&args.common, None),
        Command::Forward(args) => processes(&args.common, None),
        Command::Abuse(args) => processes(&args.common, None),
        _ => scrape::ServerProcesses::default(),
    };
    let _ = scrape::SERVER_PROCESSES.set(processes);
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Connect(args) => connect::run(args, nofile).await,
            Command::ConnectWorker(args) => connect::worker_main(args).await,
            Command::Fanout(args) => fanout::run(args, nofile).await,
            Command::Streams(args) => streams::run(args, nofile).await,
            Command::Forward(args) => forward::run(args).await,
            Command::BareSqs(args) => forward::run_bare(args).await,
            Command::Abuse(args) => abuse::run(args).await,
        }
    });
    // Connections still open are dropped with the runtime, without waiting on the peers.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("loadtest: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use clap::Parser;

    use super::*;

    pub(crate) fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("loadtest").chain(args.iter().copied()))
    }

    #[test]
    fn fanout_takes_the_benchmark_series_arguments() {
        let cli = parse(&[
            "fanout",
            "--url",
            "ws://127.0.0.1:18090/ws",
            "--subscribers",
            "1000",
            "--projects",
            "10",
            "--publishers",
            "8",
            "--rate",
            "1500",
            "--duration",
            "30",
            "--via",
            "ws",
            "--server-pid",
            "42",
        ])
        .expect("the arguments of scripts/bench/benchmarks.sh");
        let Command::Fanout(args) = cli.command else { panic!("not fanout") };
        assert_eq!((args.subscribers, args.projects, args.publishers), (1000, 10, 8));
        assert_eq!((args.rate, args.duration), (1500.0, 30.0));
        assert_eq!(args.via, fanout::Via::Ws);
        assert_eq!(args.common.server_pids, vec![42]);
        assert_eq!(args.window, 32, "default window");
    }

    #[test]
    fn every_scenario_needs_a_url() {
        for scenario in ["connect", "fanout", "streams", "forward", "abuse"] {
            assert!(parse(&[scenario]).is_err(), "{scenario} without --url");
        }
    }

    #[test]
    fn metrics_urls_default_to_each_distinct_instance() {
        let cli = parse(&[
            "connect",
            "--url",
            "ws://127.0.0.1:9001/ws",
            "--url",
            "ws://127.0.0.1:9000/ws",
            "--url",
            "ws://127.0.0.1:9001/ws",
        ])
        .expect("valid arguments");
        let Command::Connect(args) = cli.command else { panic!("not connect") };
        let targets = args.common.targets().expect("loopback targets");
        assert_eq!(
            args.common.metrics_urls(&targets).expect("loopback metrics URLs"),
            ["http://127.0.0.1:9000/metrics", "http://127.0.0.1:9001/metrics"]
        );
    }

    #[test]
    fn a_non_loopback_target_is_refused() {
        let cli = parse(&["connect", "--url", "ws://10.0.0.1:8080/ws"]).expect("parses");
        let Command::Connect(args) = cli.command else { panic!("not connect") };
        let error = args.common.targets().expect_err("not loopback");
        assert!(format!("{error:#}").contains("refused"), "{error:#}");
    }
}
