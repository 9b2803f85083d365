//! The gateway under test: in this process ([`TestServer`], its own thread and actix System) or
//! as the release or debug binary ([`ChildServer`]), and what is read from it (metrics, sockets).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use agenticai_websocket::{
    config::Config,
    server::{Server, ShutdownTrigger},
};
use serde_json::Value;

use super::{free_port, TIMEOUT};

/// A gateway running in its own thread (its own actix System), stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The operator endpoints' port, when the test set INTERNAL_PORT.
    pub internal_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    trigger: ShutdownTrigger,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    _data: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with local defaults, adjusted by `configure`.
    pub fn start(configure: impl FnOnce(&mut Config)) -> Self {
        Self::try_start(configure).unwrap_or_else(|error| panic!("server failed to start: {error}"))
    }

    /// Like [`TestServer::start`], but returns the start-up error instead of panicking.
    pub fn try_start(configure: impl FnOnce(&mut Config)) -> Result<Self, String> {
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = Config::local_defaults(data.path().to_path_buf());
        config.server.workers = 2;
        configure(&mut config);
        agenticai_websocket::logging::init(config.telemetry.log_format);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = match Server::bind(config).await {
                    Ok(server) => server,
                    Err(error) => {
                        let _ = ready_tx.send(Err(format!("{error:#}")));
                        return Err(error);
                    }
                };
                let _ = ready_tx.send(Ok((server.local_addr(), server.internal_addr(), server.shutdown_trigger())));
                server.run().await
            })
        });
        let (addr, internal_addr, trigger) = ready_rx.recv_timeout(TIMEOUT).expect("server thread answered")?;
        Ok(TestServer {
            addr,
            internal_addr,
            data_dir: data.path().to_path_buf(),
            trigger,
            thread: Some(thread),
            _data: data,
        })
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A URL on the port of the operator endpoints: the internal one when set, else the public.
    pub fn operator_url(&self, path: &str) -> String {
        format!("http://{}{}", self.internal_addr.unwrap_or(self.addr), path)
    }

    /// Fires the drain without waiting for it (dropping the server waits).
    pub fn begin_drain(&self) {
        self.trigger.fire();
    }

    /// Fires the drain and waits for the server to finish it.
    fn stop(&mut self) -> anyhow::Result<()> {
        self.trigger.fire();
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| anyhow::anyhow!("server thread panicked"))?,
            None => Ok(()),
        }
    }

    /// The Prometheus text.
    pub async fn metrics(&self) -> String {
        super::wire::get(self.operator_url("/metrics")).await.text().await.expect("metrics body")
    }

    /// One sample of a metric (name with labels, exactly as exposed); panics when the series is
    /// not exposed, so a renamed metric or label fails the test instead of reading as 0.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// Waits until `series` is exposed with `value` (metrics are updated by other actors, a
    /// moment later); a series still absent at the deadline fails like a wrong value.
    pub async fn wait_for_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let current = metric_sample(&self.metrics().await, series);
            if current == Some(value) {
                return;
            }
            assert!(Instant::now() < deadline, "{series} is {current:?} (None: not exposed), expected {value}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn publish(&self, body: Value) -> reqwest::Response {
        super::wire::send(reqwest::Client::new().post(self.http_url("/api/v1/publish")).json(&body)).await
    }

    /// Publishes with a publish API key (`Authorization: Bearer KEY`).
    pub async fn publish_with_key(&self, body: Value, key: &str) -> reqwest::Response {
        super::wire::send(reqwest::Client::new().post(self.http_url("/api/v1/publish")).bearer_auth(key).json(&body))
            .await
    }
}

impl Drop for TestServer {
    /// Drains the server and fails the test if the server or its drain failed (an error returned
    /// or a panic in its thread), unless the test is already failing.
    fn drop(&mut self) {
        let outcome = self.stop();
        if let Err(error) = outcome {
            if !std::thread::panicking() {
                panic!("the server failed: {error:#}");
            }
        }
    }
}

/// GETs a URL and parses its JSON body.
pub async fn get_json(url: impl reqwest::IntoUrl) -> Value {
    super::wire::get(url).await.json().await.expect("a JSON body")
}

/// The value of one series in a Prometheus text exposition; panics when it is not exposed.
pub fn metric_value(text: &str, series: &str) -> f64 {
    metric_sample(text, series).unwrap_or_else(|| panic!("{series} is not exposed in\n{text}"))
}

/// The value of one series (its name and labels compared whole, as exposed), None when absent.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap_or_else(|_| panic!("{line:?} has no numeric value")))
    })
}

/// Asserts the Prometheus text exposes each series with exactly its value (whole series, whole value).
pub fn assert_metrics(text: &str, expected: &[(&str, f64)]) {
    for (series, value) in expected {
        assert_eq!(metric_sample(text, series), Some(*value), "{series} in\n{text}");
    }
}

/// Whether the kernel still has a TCP connection from `local` to `remote` (IPv4 loopback),
/// read from /proc/net/tcp: what a server that dropped a socket can be checked by while its peer
/// has not noticed yet.
pub fn tcp_connection_exists(local: SocketAddr, remote: SocketAddr) -> bool {
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(_) => panic!("IPv4 only: {addr}"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str())
    })
}

/// The server binary as a child process (for multi-process tests), stopped on drop.
pub struct ChildServer {
    pub port: u16,
    pub child: Child,
    _data: tempfile::TempDir,
}

impl ChildServer {
    pub async fn spawn(env: &[(&str, String)]) -> Self {
        Self::spawn_with_stdout(env, Stdio::null()).await
    }

    /// Like [`ChildServer::spawn`], with the server's stdout (its EMF lines) going to `stdout`.
    pub async fn spawn_with_stdout(env: &[(&str, String)], stdout: Stdio) -> Self {
        Self::spawn_with_output(env, stdout, Stdio::inherit()).await
    }

    /// Like [`ChildServer::spawn_with_stdout`], with its log (stderr) going to `stderr`.
    pub async fn spawn_with_output(env: &[(&str, String)], stdout: Stdio, stderr: Stdio) -> Self {
        Self::spawn_binary(env!("CARGO_BIN_EXE_agenticai-websocket"), env, stdout, stderr).await
    }

    /// Like [`ChildServer::spawn_with_output`], running `binary` (another build of the server,
    /// a release one to measure it).
    pub async fn spawn_binary(binary: &str, env: &[(&str, String)], stdout: Stdio, stderr: Stdio) -> Self {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .env("WEBSOCKET_HOST", "127.0.0.1")
            .env("WEBSOCKET_PORT", port.to_string())
            .env("DATA_DIR", data.path())
            .env("DRAIN_SECONDS", "1")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("server binary starts");
        let server = ChildServer { port, child, _data: data };
        server.wait_ready().await;
        server
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = reqwest::get(self.http_url("/ready")).await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server on {} never became ready", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn publish(&self, body: Value) -> reqwest::Response {
        super::wire::send(reqwest::Client::new().post(self.http_url("/api/v1/publish")).json(&body)).await
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}
