//! The wire as the tests saw it, for the API specs check (`scripts/checks/api-specs.sh`): with
//! `RECORD_WIRE_DIR` set, every WebSocket frame [`Client`](super::Client) sends or receives
//! (and each close code), every refused upgrade and every HTTP exchange made through [`send`]
//! is appended as one JSON line to `RECORD_WIRE_DIR/<test binary>-<pid>.jsonl`; the check
//! replays them against `docs/api/asyncapi.yaml` and `docs/api/openapi.yaml`.
//!
//! Unset (the default), recording costs one read of a `OnceLock` per frame or request, and
//! [`send`] hands back reqwest's own response untouched.

use std::{
    fs::File,
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    sync::{Mutex, OnceLock, PoisonError},
};

use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::http;

static RECORDING: OnceLock<Option<Mutex<File>>> = OnceLock::new();

fn recording() -> Option<&'static Mutex<File>> {
    RECORDING
        .get_or_init(|| {
            let dir = PathBuf::from(std::env::var_os("RECORD_WIRE_DIR")?);
            std::fs::create_dir_all(&dir).expect("RECORD_WIRE_DIR can be created");
            let binary = std::env::current_exe()
                .ok()
                .and_then(|path| path.file_stem().map(|stem| stem.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "tests".to_owned());
            let path = dir.join(format!("{binary}-{}.jsonl", std::process::id()));
            let file = File::options().create(true).append(true).open(&path).expect("the wire record opens");
            Some(Mutex::new(file))
        })
        .as_ref()
}

/// Appends one record, tagged with the test that made it (libtest names each test's thread
/// after it), so a frame the specs refuse leads back to its test.
fn append(mut record: Value) {
    let Some(file) = recording() else { return };
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    if let Some(fields) = record.as_object_mut() {
        fields.insert("test".into(), test.into());
    }
    let mut line = record.to_string();
    line.push('\n');
    // One write_all per line under the lock: lines of concurrent tests never interleave.
    file.lock().unwrap_or_else(PoisonError::into_inner).write_all(line.as_bytes()).expect("the wire record is written");
}

/// Which way a WebSocket frame went.
#[derive(Clone, Copy)]
pub enum Direction {
    Sent,
    Received,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// Records a text frame of the connection whose client end is `local` (unique while it is
/// open, so the frames of one connection can be told apart from the others').
pub fn text_frame(local: impl FnOnce() -> Option<SocketAddr>, direction: Direction, text: &str) {
    if recording().is_none() {
        return;
    }
    let frame = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
    let connection = local().map(|addr| addr.to_string());
    append(json!({"kind": "ws", "connection": connection, "direction": direction.as_str(), "frame": frame}));
}

/// Records the close code the server ended a connection with.
pub fn close_frame(local: impl FnOnce() -> Option<SocketAddr>, code: u16) {
    if recording().is_none() {
        return;
    }
    let connection = local().map(|addr| addr.to_string());
    append(json!({"kind": "ws", "connection": connection, "direction": "received", "close": code}));
}

/// Records an HTTP exchange; `body` is the response body as received.
pub fn http_exchange(
    method: &str,
    url: &str,
    request_body: Option<&[u8]>,
    response: &http::response::Parts,
    body: &[u8],
) {
    if recording().is_none() {
        return;
    }
    let parsed = reqwest::Url::parse(url).ok();
    let path = parsed.as_ref().map_or_else(|| url.to_owned(), |url| url.path().to_owned());
    let query = parsed.as_ref().and_then(|url| url.query().map(str::to_owned));
    let headers: Map<String, Value> = response
        .headers
        .iter()
        .map(|(name, value)| {
            (name.as_str().to_owned(), Value::String(String::from_utf8_lossy(value.as_bytes()).into()))
        })
        .collect();
    let decoded = |bytes: &[u8]| {
        serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    };
    append(json!({
        "kind": "http",
        "method": method,
        "path": path,
        "query": query,
        "request_body": request_body.map(decoded),
        "status": response.status.as_u16(),
        "headers": headers,
        "body": decoded(body),
    }));
}

/// Sends an HTTP request and records the exchange; the response comes back whole (its body
/// read and put back while recording, so the caller reads it as usual).
pub async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    let (client, request) = request.build_split();
    let request = request.expect("a well-formed request");
    if recording().is_none() {
        return client.execute(request).await.expect("an HTTP answer");
    }
    let method = request.method().to_string();
    let url = request.url().to_string();
    let request_body = request.body().and_then(|body| body.as_bytes()).map(<[u8]>::to_vec);
    let response = client.execute(request).await.expect("an HTTP answer");
    let mut head = http::Response::builder().status(response.status()).version(response.version());
    if let Some(headers) = head.headers_mut() {
        *headers = response.headers().clone();
    }
    let body = response.bytes().await.expect("the response body");
    let (parts, ()) = head.body(()).expect("the response head rebuilds").into_parts();
    http_exchange(&method, &url, request_body.as_deref(), &parts, &body);
    reqwest::Response::from(http::Response::from_parts(parts, body))
}

/// `reqwest::get`, recorded.
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Response {
    send(reqwest::Client::new().get(url)).await
}
