//! Which server a `connect` or `fanout` run drives: our gateway, or Nchan (C, on nginx) for the
//! side-by-side figures of issue 29 (`scripts/bench/nchan-side-by-side.sh`, with
//! `scripts/bench/nchan/nginx.conf`). The scenarios are the same for both; [`Server`] holds what
//! differs: where a subscriber connects, where a publication is posted, whether a greeting
//! follows the upgrade, the envelope a delivery arrives in, and where the server's own figures
//! come from. Nchan has no `/metrics`: its CPU, memory and open files are read from /proc of the
//! `--server-pid`s (nginx's master and workers), and [`MemorySource::Pss`] reads our gateway's
//! memory the same way, so that both memory figures of a side-by-side run have one source.

use clap::ValueEnum;

use crate::{
    net::{Greeting, Target},
    scrape, Common,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Server {
    /// agenticai-websocket: --url ws://HOST:PORT/ws; subscribers by `?project_id=`, publications
    /// by POST /api/v1/publish.
    Gateway,
    /// Nchan on nginx: --url ws://HOST:PORT/ (nginx's root); subscribers on /sub/{project},
    /// publications by POST /pub/{project}; needs --server-pid (no /metrics).
    Nchan,
}

/// Where a server's resident memory is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MemorySource {
    /// `process_resident_memory_bytes` of each /metrics.
    Metrics,
    /// The proportional set size (Pss, /proc/PID/smaps_rollup) of every --server-pid, summed:
    /// nginx's workers share pages with their master, which a sum of RSS would count once per
    /// process.
    Pss,
}

impl MemorySource {
    /// The series of a [`scrape::Sample`] holding the memory.
    pub fn series(self) -> &'static str {
        match self {
            MemorySource::Metrics => scrape::RSS,
            MemorySource::Pss => scrape::PSS,
        }
    }

    /// Its name in a summary (and, in lower case, the prefix of its JSON fields).
    pub fn label(self) -> &'static str {
        match self {
            MemorySource::Metrics => "RSS",
            MemorySource::Pss => "PSS",
        }
    }

    /// A JSON field of this memory: `rss_held_bytes`, `pss_held_bytes`, ...
    pub fn field(self, name: &str) -> String {
        format!("{}_{name}", self.label().to_lowercase())
    }
}

/// The server options of `connect` and `fanout`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// The server behind --url.
    #[arg(long = "server", value_enum, default_value_t = Server::Gateway)]
    pub kind: Server,
    /// Where the server's memory is read (default: metrics for the gateway, pss for Nchan). Give
    /// pss to both servers of a side-by-side run, so their figures have one source.
    #[arg(long = "server-memory", value_enum)]
    pub memory: Option<MemorySource>,
}

impl ServerArgs {
    pub fn memory_source(&self) -> MemorySource {
        self.memory.unwrap_or(match self.kind {
            Server::Gateway => MemorySource::Metrics,
            Server::Nchan => MemorySource::Pss,
        })
    }

    /// Refuses what cannot be measured: Nchan's figures and Pss come only from --server-pid.
    pub fn check(&self, common: &Common) -> anyhow::Result<()> {
        anyhow::ensure!(
            !(self.kind == Server::Nchan && self.memory == Some(MemorySource::Metrics)),
            "--server nchan has no /metrics: its memory is --server-memory pss"
        );
        anyhow::ensure!(
            self.kind.has_metrics() || !common.server_pids.is_empty(),
            "--server nchan needs --server-pid (nginx's master and each worker): it has no /metrics"
        );
        anyhow::ensure!(
            self.memory_source() != MemorySource::Pss || !common.server_pids.is_empty(),
            "--server-memory pss needs --server-pid"
        );
        Ok(())
    }

    /// The /metrics to scrape: none for Nchan (unless given), its figures come from /proc.
    pub fn metrics_urls(&self, common: &Common, targets: &[Target]) -> anyhow::Result<Vec<String>> {
        if self.kind.has_metrics() || !common.metrics_urls.is_empty() {
            common.metrics_urls(targets)
        } else {
            Ok(Vec::new())
        }
    }

    /// The same options, for a worker process's command line.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["--server".to_owned(), value_name(self.kind)];
        if let Some(memory) = self.memory {
            args.extend(["--server-memory".to_owned(), value_name(memory)]);
        }
        args
    }
}

fn value_name(value: impl ValueEnum) -> String {
    value.to_possible_value().map(|value| value.get_name().to_owned()).unwrap_or_default()
}

impl Server {
    /// The WebSocket URL a subscriber of `project` opens.
    pub fn subscribe_url(self, target: &Target, project: &str) -> String {
        match self {
            Server::Gateway => target.ws_url(Some(project)),
            Server::Nchan => format!("ws://{}{}/sub/{project}", target.host(), target.path.trim_end_matches('/')),
        }
    }

    /// An HTTP POST publishing to `project` (the body still to be set).
    pub fn publish_request(self, client: &reqwest::Client, target: &Target, project: &str) -> reqwest::RequestBuilder {
        match self {
            Server::Gateway => client.post(format!("{}/api/v1/publish", target.http_base())),
            // Nchan answers with its channel's figures (`subscribers` among them) as text unless
            // asked for JSON.
            Server::Nchan => client
                .post(format!("{}{}/pub/{project}", target.http_base(), target.path.trim_end_matches('/')))
                .header(reqwest::header::ACCEPT, "application/json"),
        }
    }

    /// What a new connection waits for before it counts as open.
    pub fn greeting(self) -> Greeting {
        match self {
            Server::Gateway => Greeting::Connected,
            Server::Nchan => Greeting::None,
        }
    }

    /// The `type` a delivery of a publication of type `published` arrives with: ours wraps each
    /// in `{"type":"message",...}`, Nchan delivers the body as it was posted.
    pub fn delivery_type(self, published: &str) -> &str {
        match self {
            Server::Gateway => "message",
            Server::Nchan => published,
        }
    }

    /// Whether the server has /metrics (its delivery count, active connections, closes by code).
    pub fn has_metrics(self) -> bool {
        self == Server::Gateway
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::parse(url).expect("a loopback URL")
    }

    #[test]
    fn subscribers_connect_where_each_server_serves_them() {
        let gateway = target("ws://127.0.0.1:18090/ws");
        assert_eq!(Server::Gateway.subscribe_url(&gateway, "p-1"), "ws://127.0.0.1:18090/ws?project_id=p-1");
        for root in ["ws://127.0.0.1:18092", "ws://127.0.0.1:18092/"] {
            assert_eq!(Server::Nchan.subscribe_url(&target(root), "p-1"), "ws://127.0.0.1:18092/sub/p-1", "{root}");
        }
        let prefixed = target("ws://127.0.0.1:18092/nchan/");
        assert_eq!(Server::Nchan.subscribe_url(&prefixed, "p-1"), "ws://127.0.0.1:18092/nchan/sub/p-1");
    }

    #[test]
    fn publications_are_posted_where_each_server_takes_them() {
        let client = reqwest::Client::new();
        let request = |server: Server, url: &str| {
            server.publish_request(&client, &target(url), "p-1").build().expect("a request")
        };
        let ours = request(Server::Gateway, "ws://127.0.0.1:18090/ws");
        assert_eq!(ours.url().as_str(), "http://127.0.0.1:18090/api/v1/publish");
        assert_eq!(ours.method(), reqwest::Method::POST);
        assert!(ours.headers().get(reqwest::header::ACCEPT).is_none(), "the gateway's requests are as they were");
        let nchan = request(Server::Nchan, "ws://127.0.0.1:18092/");
        assert_eq!(nchan.url().as_str(), "http://127.0.0.1:18092/pub/p-1");
        assert_eq!(nchan.headers()[reqwest::header::ACCEPT], "application/json");
    }

    #[test]
    fn each_server_has_its_greeting_and_envelope() {
        assert_eq!(Server::Gateway.greeting(), Greeting::Connected);
        assert_eq!(Server::Nchan.greeting(), Greeting::None);
        assert_eq!(Server::Gateway.delivery_type("loadtest"), "message");
        assert_eq!(Server::Nchan.delivery_type("loadtest"), "loadtest");
    }

    fn server_args(args: &[&str]) -> (ServerArgs, Common) {
        let cli = crate::tests::parse(&[&["connect", "--url", "ws://127.0.0.1:18092/"], args].concat())
            .expect("valid arguments");
        let crate::Command::Connect(connect) = cli.command else { panic!("not connect") };
        (connect.server, connect.common)
    }

    #[test]
    fn nchan_is_measured_from_proc_only() {
        let (args, common) = server_args(&[]);
        assert_eq!((args.kind, args.memory_source()), (Server::Gateway, MemorySource::Metrics));
        assert!(args.check(&common).is_ok());
        let (args, common) = server_args(&["--server", "nchan"]);
        assert_eq!(args.memory_source(), MemorySource::Pss);
        let error = args.check(&common).expect_err("no pid to read");
        assert!(format!("{error:#}").contains("--server-pid"), "{error:#}");
        let (args, common) = server_args(&["--server", "nchan", "--server-pid", "7", "--server-pid", "8"]);
        assert!(args.check(&common).is_ok());
        let targets = common.targets().expect("loopback");
        assert!(args.metrics_urls(&common, &targets).expect("no URL to check").is_empty());
        let (args, common) = server_args(&["--server", "nchan", "--server-pid", "7", "--server-memory", "metrics"]);
        assert!(args.check(&common).is_err(), "Nchan has no /metrics");
        let (args, common) = server_args(&["--server-memory", "pss"]);
        assert!(args.check(&common).is_err(), "pss without a pid");
    }

    #[test]
    fn a_worker_gets_the_same_server_options() {
        let (args, _) = server_args(&["--server", "nchan", "--server-memory", "pss"]);
        assert_eq!(args.to_args(), ["--server", "nchan", "--server-memory", "pss"]);
        let (args, _) = server_args(&[]);
        assert_eq!(args.to_args(), ["--server", "gateway"]);
    }

    #[test]
    fn memory_fields_are_named_after_their_source() {
        assert_eq!(MemorySource::Metrics.field("held_bytes"), "rss_held_bytes");
        assert_eq!(MemorySource::Pss.field("held_bytes"), "pss_held_bytes");
        assert_eq!(MemorySource::Pss.series(), scrape::PSS);
    }
}
