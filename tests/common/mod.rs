//! Test support: a real server on a free loopback port, a real WebSocket client, and the AWS
//! emulator (moto) over its real wire protocol.
//!
//! Every test binary declares it `pub mod common;`: it is a library shared by all of them, and
//! what one binary leaves unused another uses. Public items are its interface; private ones are
//! still checked for dead code.

pub mod netns;
pub mod raw;
pub mod tokens;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use agenticai_websocket::{
    config::Config,
    server::{Server, ShutdownTrigger},
};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, protocol::CloseFrame, Message},
    MaybeTlsStream, WebSocketStream,
};

pub const TIMEOUT: Duration = Duration::from_secs(10);

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
        reqwest::get(self.operator_url("/metrics")).await.expect("GET /metrics").text().await.expect("metrics body")
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
        reqwest::Client::new()
            .post(self.http_url("/api/v1/publish"))
            .json(&body)
            .send()
            .await
            .expect("POST /api/v1/publish")
    }

    /// Publishes with a publish API key (`Authorization: Bearer KEY`).
    pub async fn publish_with_key(&self, body: Value, key: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.http_url("/api/v1/publish"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("POST /api/v1/publish")
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
    reqwest::get(url).await.expect("GET").json().await.expect("a JSON body")
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

/// A real WebSocket client.
pub struct Client {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub connection_id: String,
}

impl Client {
    /// Connects and reads the `connected` greeting.
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url).await
    }

    /// Like [`Client::connect`], with the upgrade request built by the caller (extra headers).
    pub async fn connect_with(request: impl IntoClientRequest + Unpin) -> Self {
        let (stream, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("WebSocket handshake");
        Self::greeted(stream).await
    }

    /// Like [`Client::connect`] (to `path` on the server at `addr`), over a socket whose receive
    /// buffer is about `bytes`: the kernel's buffers (megabytes on loopback) then no longer
    /// absorb what the client has not read, so the server sees the client's own pace.
    pub async fn connect_with_receive_buffer(addr: SocketAddr, path: &str, bytes: u32) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let tcp = tokio::time::timeout(TIMEOUT, socket.connect(addr)).await.expect("connect in time").expect("connect");
        let url = format!("ws://{addr}{path}");
        let (stream, _) =
            tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)))
                .await
                .expect("handshake in time")
                .expect("WebSocket handshake");
        Self::greeted(stream).await
    }

    /// Reads the `connected` greeting of a new connection.
    async fn greeted(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        let mut client = Client { stream, connection_id: String::new() };
        let greeting = client.recv().await;
        assert_eq!(greeting["type"], "connected", "{greeting}");
        client.connection_id = greeting["connection_id"].as_str().expect("connection_id").to_owned();
        client
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("send");
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The next frame, whatever it is; panics on close or timeout.
    pub async fn next_message(&mut self) -> Message {
        tokio::time::timeout(TIMEOUT, self.stream.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("valid frame")
    }

    /// The next text frame as JSON (control frames are skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            match self.next_message().await {
                Message::Text(text) => return serde_json::from_str(&text).expect("server sends JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next text frame exactly as sent (control frames are skipped).
    pub async fn stream_text(&mut self) -> String {
        loop {
            match self.next_message().await {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until a frame of `kind` arrives; returns it (and drops what came before).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Sends a request and returns the next frame.
    pub async fn request(&mut self, value: Value) -> Value {
        self.send(value).await;
        self.recv().await
    }

    /// Waits for the server's close frame; returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.stream.next()).await.expect("close in time") {
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => return code.into(),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("connection failed before a close frame: {error}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Asserts nothing arrives for `window` but pings and pongs: a text frame, a close frame or
    /// the end of the connection fails it.
    pub async fn expect_silence(&mut self, window: Duration) {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }
}

/// Publishes `{"n": n, "pad": <pad bytes>}` to `project` on the server at `addr`; its receipt.
pub async fn publish_numbered(addr: SocketAddr, project: &str, n: u64, pad: usize) -> Value {
    let body = serde_json::json!({"project_id": project, "data": {"n": n, "pad": "x".repeat(pad)}});
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/publish"))
        .json(&body)
        .send()
        .await
        .expect("POST /api/v1/publish");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a receipt")
}

/// The resume seam under load. 1000 publications of 6 KB are published to `publish_at`
/// (6 MB: more than the kernel's socket buffers take for a client with a small receive window,
/// so the replay has to wait for the client); a client of `subscribe_at` resumes from offset 0;
/// `before` more of 6 KB are published before it reads anything, and `during` more of 1 KB
/// while it reads, promptly but not instantly. It must get every offset exactly once, in order,
/// and then nothing. (The server's HISTORY_SIZE must hold them all; they stay under the default
/// HISTORY_MAX_BYTES.)
pub async fn resume_while_publishing(
    publish_at: SocketAddr,
    subscribe_at: SocketAddr,
    project: &str,
    before: u64,
    during: u64,
) {
    let backlog = 1000;
    let mut epoch = String::new();
    for n in 1..=backlog {
        epoch = publish_numbered(publish_at, project, n, 6_000).await["epoch"].as_str().unwrap().to_owned();
    }
    let mut client = Client::connect_with_receive_buffer(subscribe_at, "/ws", 8 * 1024).await;
    let since = serde_json::json!({"offset": 0, "epoch": epoch});
    let confirmed =
        client.request(serde_json::json!({"action": "subscribe", "project_id": project, "since": since})).await;
    assert_eq!(confirmed["recovered"], true, "{confirmed}");
    for n in backlog + 1..=backlog + before {
        publish_numbered(publish_at, project, n, 6_000).await;
    }
    let last = backlog + before + during;
    let project_id = project.to_owned();
    let publisher = tokio::spawn(async move {
        for n in backlog + before + 1..=last {
            publish_numbered(publish_at, &project_id, n, 1_000).await;
        }
    });
    let mut offsets = Vec::new();
    while offsets.last() != Some(&last) {
        let message = client.recv().await;
        assert_eq!(message["type"], "message", "{message}");
        offsets.push(message["offset"].as_u64().expect("an offset"));
        if offsets.len() % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    publisher.await.expect("the publisher");
    assert_eq!(offsets, (1..=last).collect::<Vec<_>>(), "no gap and no duplicate at the seam");
    client.expect_silence(Duration::from_millis(200)).await;
}

/// A WebSocket upgrade the server refused, as the client sees it.
pub struct RefusedUpgrade {
    pub status: u16,
    /// The `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
    /// The JSON error body (`Null` when there is none).
    pub body: Value,
}

/// Attempts an upgrade that must be refused with an HTTP answer.
pub async fn refused_upgrade(
    request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
) -> RefusedUpgrade {
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => RefusedUpgrade {
            status: response.status().as_u16(),
            retry_after: response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok()),
            body: response.body().as_deref().and_then(|body| serde_json::from_slice(body).ok()).unwrap_or(Value::Null),
        },
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

/// The AWS emulator: `MOTO_ENDPOINT` when the test command started one, else one started here
/// (once per test binary) with `moto_server` from PyPI.
pub fn moto_endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            ensure_dummy_credentials();
            if let Ok(endpoint) = std::env::var("MOTO_ENDPOINT") {
                return endpoint;
            }
            let (endpoint, child) = start_moto();
            MOTO_CHILDREN.lock().unwrap().push(child);
            endpoint
        })
        .clone()
}

static MOTO_CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// Starts a moto server on a free port; returns its endpoint and process.
fn start_moto() -> (String, Child) {
    ensure_dummy_credentials();
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server is installed (pip install 'moto[server]'; scripts/test.sh does)");
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start on {endpoint}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (endpoint, child)
}

/// moto accepts any credentials; the SDK wants some.
fn ensure_dummy_credentials() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (name, value) in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")] {
            if std::env::var_os(name).is_none() {
                // Set before any client reads the environment (first use of the emulator).
                std::env::set_var(name, value);
            }
        }
    });
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local addr").port()
}

/// SDK configuration against an emulator endpoint.
pub async fn aws_config(endpoint: &str) -> aws_config::SdkConfig {
    agenticai_websocket::sdk_config("us-east-1", Some(endpoint)).await
}

/// Creates a queue with a unique name (FIFO when `fifo`); returns its URL.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, prefix: &str, fifo: bool) -> String {
    let mut name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut request = sqs.create_queue();
    if fifo {
        name.push_str(".fifo");
        request = request.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
    }
    request.queue_name(name).send().await.expect("create queue").queue_url().expect("queue url").to_owned()
}

/// Every message on a queue (received and deleted), waiting up to `expected` messages.
pub async fn drain_queue(sqs: &aws_sdk_sqs::Client, url: &str, expected: usize) -> Vec<aws_sdk_sqs::types::Message> {
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while messages.len() < expected && Instant::now() < deadline {
        let output = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for message in output.messages() {
            if let Some(handle) = message.receipt_handle() {
                sqs.delete_message().queue_url(url).receipt_handle(handle).send().await.expect("delete");
            }
            messages.push(message.clone());
        }
    }
    messages
}

/// A fault-injecting HTTP proxy in front of the emulator, on the real wire: it enforces
/// DynamoDB's 25-item BatchWriteItem limit (moto does not), and on the first `unprocessed_once`
/// BatchWriteItem calls forwards only the first half of the items, answering the rest as
/// `UnprocessedItems` the way DynamoDB does under throttling. A BatchWriteItem carrying
/// [`POISON`] anywhere is refused whole with a ValidationException, as DynamoDB refuses a batch
/// with one invalid item; `poisoned_batches` keeps the item counts of those calls.
pub const POISON: &str = "poison-record";

pub struct DynamoFaultProxy {
    pub endpoint: String,
    pub batch_sizes: std::sync::Arc<Mutex<Vec<usize>>>,
    pub poisoned_batches: std::sync::Arc<Mutex<Vec<usize>>>,
    _thread: JoinHandle<()>,
}

impl DynamoFaultProxy {
    pub fn start(upstream: String, unprocessed_once: usize) -> Self {
        use actix_web::{web, HttpRequest, HttpResponse};
        use std::sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        };

        struct State {
            upstream: String,
            remaining_faults: AtomicUsize,
            batch_sizes: Arc<Mutex<Vec<usize>>>,
            poisoned_batches: Arc<Mutex<Vec<usize>>>,
        }

        async fn forward(request: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
            let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let mut body = body.to_vec();
            let mut unprocessed: Option<Value> = None;
            if target.ends_with("BatchWriteItem") {
                let mut parsed: Value = serde_json::from_slice(&body).unwrap();
                let tables = parsed["RequestItems"].as_object_mut().unwrap();
                let count: usize = tables.values().map(|v| v.as_array().map_or(0, Vec::len)).sum();
                state.batch_sizes.lock().unwrap().push(count);
                if count > 25 {
                    return HttpResponse::BadRequest().content_type("application/x-amz-json-1.0").body(
                        r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"Too many items requested for the BatchWriteItem call"}"#,
                    );
                }
                if body.windows(POISON.len()).any(|window| window == POISON.as_bytes()) {
                    state.poisoned_batches.lock().unwrap().push(count);
                    return HttpResponse::BadRequest().content_type("application/x-amz-json-1.0").body(
                        r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"One or more parameter values were invalid"}"#,
                    );
                }
                let fault = state
                    .remaining_faults
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if fault && count > 1 {
                    let mut held_back = serde_json::Map::new();
                    for (table, requests) in tables.iter_mut() {
                        let requests = requests.as_array_mut().unwrap();
                        let keep = requests.len().div_ceil(2);
                        held_back.insert(table.clone(), Value::Array(requests.split_off(keep)));
                    }
                    unprocessed = Some(Value::Object(held_back));
                    body = serde_json::to_vec(&parsed).unwrap();
                }
            }
            let client = reqwest::Client::new();
            let mut upstream = client.post(format!("{}{}", state.upstream, request.uri())).body(body);
            for (name, value) in request.headers() {
                if name != "host" && name != "content-length" {
                    upstream = upstream.header(name.as_str(), value.as_bytes());
                }
            }
            let response = match upstream.send().await {
                Ok(response) => response,
                Err(_) => return HttpResponse::BadGateway().finish(),
            };
            let status = response.status().as_u16();
            let content_type = response.headers().get("content-type").map(|v| v.as_bytes().to_vec());
            let mut bytes = response.bytes().await.unwrap_or_default().to_vec();
            if let Some(held_back) = unprocessed {
                let mut answer: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::json!({}));
                answer["UnprocessedItems"] = held_back;
                bytes = serde_json::to_vec(&answer).unwrap();
            }
            let mut builder = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            if let Some(content_type) = content_type {
                builder.insert_header(("content-type", content_type));
            }
            builder.body(bytes)
        }

        let batch_sizes = Arc::new(Mutex::new(Vec::new()));
        let poisoned_batches = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(State {
            upstream,
            remaining_faults: AtomicUsize::new(unprocessed_once),
            batch_sizes: batch_sizes.clone(),
            poisoned_batches: poisoned_batches.clone(),
        });
        let (addr, thread) = serve_on_loopback(move |routes| {
            routes.app_data(state.clone()).default_service(web::to(forward));
        });
        DynamoFaultProxy { endpoint: format!("http://{addr}"), batch_sizes, poisoned_batches, _thread: thread }
    }
}

/// Serves HTTP with the routes `configure` mounts on a free loopback port, with one worker in a
/// thread of its own (its own actix System), for as long as the test binary runs: the tests'
/// fault-injecting proxies. Returns its address and thread.
pub fn serve_on_loopback(
    configure: impl Fn(&mut actix_web::web::ServiceConfig) + Send + Clone + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(move || actix_web::App::new().configure(configure.clone()))
                .workers(1)
                .bind(("127.0.0.1", 0))
                .expect("a free loopback port");
            let _ = tx.send(server.addrs()[0]);
            let _ = server.run().await;
        })
    });
    (rx.recv_timeout(TIMEOUT).expect("the server thread answered"), thread)
}

/// A TCP proxy that can be switched off: while down it drops every connection at once, so the
/// service behind it looks stopped without losing its state.
pub struct OutageProxy {
    pub endpoint: String,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl OutageProxy {
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = down.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: connection reset
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        OutageProxy { endpoint, down }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
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
        reqwest::Client::new().post(self.http_url("/api/v1/publish")).json(&body).send().await.expect("publish")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// A private redis-server on a free loopback port, stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = RedisServer { port: free_port(), child: None, dir };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts (again) on the same port, with an append-only file so data survives a restart.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server; scripts/test.sh does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it outright (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs one command on a fresh connection and returns its reply as `T`; panics, with the
    /// command, on an error reply or a reply of another type.
    pub fn command<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let (name, rest) = args.split_first().expect("a command name");
        let mut connection = redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("a connection to the test's redis-server");
        redis::cmd(name).arg(rest).query(&mut connection).unwrap_or_else(|error| panic!("redis {args:?}: {error}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
