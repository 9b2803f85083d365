//! A raw TCP WebSocket client, for what a well-behaved client library refuses to send: frame
//! headers declaring huge lengths, fragmented control frames, HTTP/1.0 upgrades, trickled bytes.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::TIMEOUT;

/// The masking key of every frame sent here (any key will do; clients must mask).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub struct RawSocket {
    pub stream: TcpStream,
    /// Bytes read but not yet parsed into a frame.
    buffered: Vec<u8>,
}

/// One frame as the server sent it.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The close code of a close frame (1005 when it carries none).
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8).then(|| match self.payload.as_slice() {
            [high, low, ..] => u16::from_be_bytes([*high, *low]),
            _ => 1005,
        })
    }
}

impl RawSocket {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await.expect("connect in time").unwrap();
        RawSocket { stream, buffered: Vec::new() }
    }

    /// Connects and completes a WebSocket handshake on `path`; the `connected` greeting is left
    /// to be read.
    pub async fn upgrade(addr: SocketAddr, path: &str) -> Self {
        let mut socket = Self::connect(addr).await;
        let response = socket.request(&handshake(path, "HTTP/1.1", addr)).await;
        assert!(response.starts_with("HTTP/1.1 101"), "{response}");
        socket
    }

    /// Sends a request head (and body) and returns the response head.
    pub async fn request(&mut self, request: &str) -> String {
        self.stream.write_all(request.as_bytes()).await.expect("send request");
        self.response_head().await
    }

    /// Reads up to the end of an HTTP response head.
    pub async fn response_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buffered.windows(4).position(|window| window == b"\r\n\r\n") {
                let head: Vec<u8> = self.buffered.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            assert!(self.fill().await > 0, "connection closed before a response head");
        }
    }

    /// The body that follows a response head, up to `length` bytes.
    pub async fn body(&mut self, length: usize) -> String {
        while self.buffered.len() < length {
            if self.fill().await == 0 {
                break;
            }
        }
        let take = length.min(self.buffered.len());
        String::from_utf8_lossy(&self.buffered.drain(..take).collect::<Vec<_>>()).into_owned()
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk)).await.expect("data in time");
        let read = read.unwrap_or(0);
        self.buffered.extend_from_slice(&chunk[..read]);
        read
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next frame from the server, or None once the connection is closed.
    pub async fn next_frame(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buffered) {
                self.buffered.drain(..used);
                return Some(frame);
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// Reads frames until the close frame; its code. Panics if the connection ends without one.
    pub async fn close_code(&mut self) -> u16 {
        while let Some(frame) = self.next_frame().await {
            if let Some(code) = frame.close_code() {
                return code;
            }
        }
        panic!("connection ended without a close frame")
    }

    /// Whether the server closed the TCP connection within `window` (reads and drops what comes).
    pub async fn closed_within(&mut self, window: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + window;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// A WebSocket upgrade request.
pub fn handshake(path: &str, version: &str, addr: SocketAddr) -> String {
    format!(
        "GET {path} {version}\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A masked client frame's header: FIN and `opcode` in the first byte (`first`), then the
/// declared payload length in the shortest form (or the 64-bit form when `long_form`).
pub fn frame_header(first: u8, declared: u64, long_form: bool) -> Vec<u8> {
    let mut header = vec![first];
    if !long_form && declared < 126 {
        header.push(0x80 | declared as u8);
    } else if !long_form && declared <= u64::from(u16::MAX) {
        header.push(0x80 | 126);
        header.extend_from_slice(&(declared as u16).to_be_bytes());
    } else {
        header.push(0x80 | 127);
        header.extend_from_slice(&declared.to_be_bytes());
    }
    header.extend_from_slice(&MASK);
    header
}

/// A whole masked client frame.
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = frame_header(first, payload.len() as u64, false);
    bytes.extend(payload.iter().enumerate().map(|(index, byte)| byte ^ MASK[index % 4]));
    bytes
}

fn parse_server_frame(bytes: &[u8]) -> Option<(ServerFrame, usize)> {
    let [first, second, rest @ ..] = bytes else { return None };
    let (length, header) = match second & 0x7f {
        126 => (u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize, 10),
        short => (short as usize, 2),
    };
    let payload = bytes.get(header..header + length)?.to_vec();
    Some((ServerFrame { opcode: first & 0x0f, payload }, header + length))
}
