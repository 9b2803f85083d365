//! A real WebSocket client, and the scenarios several test binaries run with it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, protocol::CloseFrame, Message},
    MaybeTlsStream, WebSocketStream,
};

use super::{
    wire::{self, Direction},
    TIMEOUT,
};

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
        wire::text_frame(|| self.local_addr(), Direction::Sent, text);
        self.stream.send(Message::text(text)).await.expect("send");
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The next frame, whatever it is; panics on close or timeout.
    pub async fn next_message(&mut self) -> Message {
        let message = tokio::time::timeout(TIMEOUT, self.stream.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("valid frame");
        self.record_received(&message);
        message
    }

    /// The client end of the connection: what tells its frames apart in the wire record.
    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self.stream.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp.local_addr().ok(),
            _ => None,
        }
    }

    fn record_received(&self, message: &Message) {
        match message {
            Message::Text(text) => wire::text_frame(|| self.local_addr(), Direction::Received, text),
            Message::Close(Some(CloseFrame { code, .. })) => wire::close_frame(|| self.local_addr(), (*code).into()),
            _ => {}
        }
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
            let next = tokio::time::timeout(remaining, self.stream.next()).await.expect("close in time");
            if let Some(Ok(message)) = &next {
                self.record_received(message);
            }
            match next {
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
    let response = wire::send(reqwest::Client::new().post(format!("http://{addr}/api/v1/publish")).json(&body)).await;
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
pub async fn refused_upgrade(request: impl IntoClientRequest + Unpin) -> RefusedUpgrade {
    let request = request.into_client_request().expect("an upgrade request");
    let url = request.uri().to_string();
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let (head, body) = (*response).into_parts();
            let body = body.unwrap_or_default();
            wire::http_exchange("GET", &url, None, &head, &body);
            refusal(head, body)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

fn refusal(head: tokio_tungstenite::tungstenite::http::response::Parts, body: Vec<u8>) -> RefusedUpgrade {
    RefusedUpgrade {
        status: head.status.as_u16(),
        retry_after: head
            .headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok()),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }
}
