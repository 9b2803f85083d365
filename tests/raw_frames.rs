//! Frames a well-behaved client never sends, through a raw socket: the server refuses each at
//! its header, before buffering a payload it will not accept, and closes the TCP connection as
//! soon as a close handshake is done.

pub mod common;

use std::{
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use common::{
    raw::{frame, frame_header, RawSocket},
    Client, TestServer,
};
use futures_util::StreamExt;

const TEXT: u8 = 0x81;
const BINARY: u8 = 0x82;
const FIRST_TEXT_FRAGMENT: u8 = 0x01;
const CONTINUATION: u8 = 0x00;
const CLOSE: u8 = 0x88;
const PING: u8 = 0x89;
const PONG: u8 = 0x8a;
const TERABYTE: u64 = 1 << 40;

/// How long the server may take to refuse a header: it needs no payload byte to decide.
const AT_ONCE: Duration = Duration::from_secs(2);

async fn upgraded(server: &TestServer) -> RawSocket {
    let mut socket = RawSocket::upgrade(server.addr, "/ws").await;
    let greeting = socket.next_frame().await.expect("the connected greeting");
    assert_eq!(greeting.opcode, 0x1);
    socket
}

/// Sends `bytes` and expects the server's close frame with `code` without sending anything more.
async fn refused_at_once(server: &TestServer, preamble: &[u8], header: &[u8], code: u16) {
    let mut socket = upgraded(server).await;
    socket.send(preamble).await.unwrap();
    socket.send(header).await.unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(AT_ONCE, socket.close_code()).await;
    assert_eq!(closed, Ok(code), "header {header:02x?} after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_data_frame_declaring_more_than_the_limit_is_refused_with_1009_at_its_header() {
    let server = TestServer::start(|config| config.connection.max_frame_bytes = NonZeroUsize::new(64 * 1024).unwrap());
    for first in [TEXT, BINARY] {
        refused_at_once(&server, &[], &frame_header(first, TERABYTE, false), 1009).await;
        refused_at_once(&server, &[], &frame_header(first, 64 * 1024 + 1, false), 1009).await;
    }
    // A continuation of a message that was started properly.
    let started = frame(FIRST_TEXT_FRAGMENT, b"{\"action\":");
    refused_at_once(&server, &started, &frame_header(CONTINUATION, TERABYTE, false), 1009).await;
    server.wait_for_metric("agenticai_ws_connections_closed_total{code=\"1009_message_too_big\"}", 5.0).await;
}

#[tokio::test]
async fn a_client_streaming_a_huge_frame_is_cut_off_instead_of_buffered() {
    let server = TestServer::start(|config| config.connection.max_frame_bytes = NonZeroUsize::new(64 * 1024).unwrap());
    let mut socket = upgraded(&server).await;
    socket.send(&frame_header(TEXT, TERABYTE, false)).await.unwrap();
    // Keep streaming as the attacker did; the server has already given up on this frame.
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..8 {
        if socket.send(&chunk).await.is_err() {
            break;
        }
    }
    assert_eq!(tokio::time::timeout(AT_ONCE, socket.close_code()).await, Ok(1009));
    assert!(socket.closed_within(Duration::from_secs(5)).await, "the server closed the connection");
    // Others are served as usual.
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    assert_eq!(client.request(serde_json::json!({"action": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn control_frames_over_125_bytes_or_fragmented_are_refused_with_1002_at_their_header() {
    let server = TestServer::start(|_| {});
    for first in [PING, PONG, CLOSE] {
        refused_at_once(&server, &[], &frame_header(first, TERABYTE, false), 1002).await;
        refused_at_once(&server, &[], &frame_header(first, 126, false), 1002).await;
    }
    // A ping without FIN: control frames must not be fragmented.
    refused_at_once(&server, &[], &frame(PING & 0x7f, b"hi"), 1002).await;
    server.wait_for_metric("agenticai_ws_connections_closed_total{code=\"1002_protocol_error\"}", 7.0).await;
}

#[tokio::test]
async fn a_64_bit_length_with_its_top_bit_set_is_a_protocol_error() {
    let server = TestServer::start(|_| {});
    refused_at_once(&server, &[], &frame_header(TEXT, 1 << 63, true), 1002).await;
    refused_at_once(&server, &[], &frame_header(TEXT, u64::MAX, true), 1002).await;
}

#[tokio::test]
async fn a_frame_at_the_limit_is_accepted_even_when_it_trickles_in() {
    let server = TestServer::start(|config| config.connection.max_frame_bytes = NonZeroUsize::new(4096).unwrap());
    let mut socket = upgraded(&server).await;
    let request = serde_json::json!({"action": "ping", "request_id": "trickled", "pad": "x".repeat(3000)}).to_string();
    let bytes = frame(TEXT, request.as_bytes());
    for piece in bytes.chunks(512) {
        socket.send(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pong = socket.next_frame().await.expect("a reply");
    assert_eq!(String::from_utf8(pong.payload).unwrap(), r#"{"type":"pong","request_id":"trickled"}"#);
}

#[tokio::test]
async fn after_a_client_close_the_server_closes_tcp_at_once() {
    let server = TestServer::start(|_| {});
    for _ in 0..3 {
        let mut client = Client::connect(&server.ws_url("/ws")).await;
        let started = Instant::now();
        client.stream.close(None).await.unwrap();
        // The close completes when the server's close frame is read and its TCP FIN arrives.
        while let Some(Ok(_)) = client.stream.next().await {}
        let took = started.elapsed();
        // At once, not after the 2 s a server waits for a peer that does not finish the close.
        assert!(took < Duration::from_secs(1), "the close took {took:?}");
    }
    let mut socket = upgraded(&server).await;
    socket.send(&frame(CLOSE, &1000u16.to_be_bytes())).await.unwrap();
    assert_eq!(socket.close_code().await, 1000);
    assert!(socket.closed_within(Duration::from_secs(1)).await, "TCP still open 1 s after the handshake");
}
