//! The client protocol through real sockets: every request shape of the original server, the
//! errors beyond it, and the limits.

pub mod common;

use std::{num::NonZeroUsize, time::Duration};

use common::{Client, TestServer};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn greeting_ping_subscribe_unsubscribe_keep_the_original_shapes() {
    let server = TestServer::start(|_| {});
    for path in ["/", "/ws"] {
        let (mut stream, _) = tokio_tungstenite::connect_async(server.ws_url(path)).await.unwrap();
        let Some(Ok(Message::Text(text))) = futures_util::StreamExt::next(&mut stream).await else {
            panic!("no greeting on {path}")
        };
        let greeting: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(greeting["type"], "connected");
        assert_eq!(greeting["message"], "WebSocket connection established");
        let timestamp = greeting["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(), "{timestamp}");
        assert_eq!(greeting["connection_id"].as_str().unwrap().len(), 36);
    }

    let mut client = Client::connect(&server.ws_url("/ws")).await;
    assert_eq!(client.request(json!({"action": "ping"})).await, json!({"type": "pong"}));
    assert_eq!(
        client.request(json!({"action": "subscribe", "project_id": "alpha"})).await,
        json!({"type": "subscription_confirmed", "project_id": "alpha"})
    );
    assert_eq!(
        client.request(json!({"action": "unsubscribe", "project_id": "alpha"})).await,
        json!({"type": "unsubscription_confirmed", "project_id": "alpha"})
    );
}

#[tokio::test]
async fn request_id_is_echoed_on_replies_and_errors() {
    let server = TestServer::start(|_| {});
    let mut client = Client::connect(&server.ws_url("/")).await;
    let pong = client.request(json!({"action": "ping", "request_id": "r-1"})).await;
    assert_eq!(pong, json!({"type": "pong", "request_id": "r-1"}));
    let confirmed = client.request(json!({"action": "subscribe", "project_id": "p", "request_id": 7})).await;
    assert_eq!(confirmed["request_id"], 7);
    let error = client.request(json!({"action": "subscribe", "request_id": [1]})).await;
    assert_eq!(error["code"], "invalid_project_id");
    assert_eq!(error["request_id"], json!([1]));
}

#[tokio::test]
async fn bad_frames_get_clear_errors_and_the_connection_stays_open() {
    let server = TestServer::start(|config| config.connection.max_project_id_bytes = NonZeroUsize::new(8).unwrap());
    let mut client = Client::connect(&server.ws_url("/ws")).await;

    client.send_text("this is not json").await;
    assert_eq!(client.recv().await, json!({"type": "error", "code": "invalid_json", "message": "Invalid JSON format"}));
    assert_eq!(
        client.request(json!({"action": "fly"})).await,
        json!({"type": "error", "code": "unknown_action", "message": "Unknown action: fly"})
    );
    let cases = [
        (json!({"action": "subscribe"}), "invalid_project_id"),
        (json!({"action": "subscribe", "project_id": ""}), "invalid_project_id"),
        (json!({"action": "subscribe", "project_id": 12}), "invalid_project_id"),
        (json!({"action": "subscribe", "project_id": "much-too-long"}), "invalid_project_id"),
        (json!({"action": "unsubscribe"}), "invalid_project_id"),
        (json!({"no_action": true}), "invalid_request"),
        (json!([1, 2, 3]), "invalid_request"),
        (json!({"action": "forward", "type": "dev", "message_id": "m"}), "invalid_project_id"),
        (json!({"action": "forward", "project_id": "p", "message_id": "m"}), "invalid_request"),
        (
            json!({"action": "forward", "type": "marketing", "project_id": "p", "message_id": "m"}),
            "unknown_message_type",
        ),
    ];
    for (request, code) in cases {
        let reply = client.request(request.clone()).await;
        assert_eq!(reply["type"], "error", "{request} -> {reply}");
        assert_eq!(reply["code"], code, "{request} -> {reply}");
        assert!(!reply["message"].as_str().unwrap().is_empty());
    }
    let unknown_type =
        client.request(json!({"action": "forward", "type": "sales", "project_id": "p", "message_id": "m"})).await;
    assert!(unknown_type["message"].as_str().unwrap().contains("accepted types: plan, planning, pm"));

    client.stream.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let binary = client.recv().await;
    assert_eq!(binary["code"], "binary_not_supported");

    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");
    let errors = server.metric("agenticai_ws_errors_total{code=\"invalid_project_id\"}").await;
    assert_eq!(errors, 6.0);
}

#[tokio::test]
async fn too_many_subscriptions_are_refused_but_resubscribing_is_fine() {
    let server =
        TestServer::start(|config| config.access.max_subscriptions_per_connection = NonZeroUsize::new(2).unwrap());
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    for project in ["a", "b"] {
        let reply = client.request(json!({"action": "subscribe", "project_id": project})).await;
        assert_eq!(reply["type"], "subscription_confirmed");
    }
    let refused = client.request(json!({"action": "subscribe", "project_id": "c"})).await;
    assert_eq!(refused["code"], "too_many_subscriptions");
    let again = client.request(json!({"action": "subscribe", "project_id": "a"})).await;
    assert_eq!(again["type"], "subscription_confirmed");
    client.request(json!({"action": "unsubscribe", "project_id": "b"})).await;
    let now_fits = client.request(json!({"action": "subscribe", "project_id": "c"})).await;
    assert_eq!(now_fits["type"], "subscription_confirmed");
}

#[tokio::test]
async fn oversized_frames_close_with_1009() {
    let server = TestServer::start(|config| config.connection.max_frame_bytes = NonZeroUsize::new(1024).unwrap());
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let fits = json!({"action": "ping", "pad": "x".repeat(900)});
    assert_eq!(client.request(fits).await["type"], "pong");
    client.send(json!({"action": "ping", "pad": "x".repeat(2000)})).await;
    assert_eq!(client.expect_close().await, 1009);
    server.wait_for_metric("agenticai_ws_connections_closed_total{code=\"1009_message_too_big\"}", 1.0).await;
}

#[tokio::test]
async fn fragmented_messages_are_reassembled_within_the_limit() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    let server = TestServer::start(|config| config.connection.max_frame_bytes = NonZeroUsize::new(1024).unwrap());
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let text = json!({"action": "ping", "request_id": "frag"}).to_string();
    let (first, second) = text.as_bytes().split_at(10);
    let mut head = Frame::message(first.to_vec(), OpCode::Data(Data::Text), false);
    head.header_mut().is_final = false;
    let tail = Frame::message(second.to_vec(), OpCode::Data(Data::Continue), true);
    client.stream.send(Message::Frame(head)).await.unwrap();
    client.stream.send(Message::Frame(tail)).await.unwrap();
    assert_eq!(client.recv().await, json!({"type": "pong", "request_id": "frag"}));
}

#[tokio::test]
async fn fragments_over_the_limit_close_with_1009_broken_ones_with_1002_and_text_not_utf8_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    let server = TestServer::start(|config| config.connection.max_frame_bytes = NonZeroUsize::new(1024).unwrap());
    let fragment = |opcode: Data, is_final: bool| {
        let mut frame = Frame::message(vec![b' '; 600], OpCode::Data(opcode), true);
        frame.header_mut().is_final = is_final;
        Message::Frame(frame)
    };

    // Two fragments of 600 bytes: each fits, together they do not.
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    client.stream.send(fragment(Data::Text, false)).await.unwrap();
    client.stream.send(fragment(Data::Continue, true)).await.unwrap();
    assert_eq!(client.expect_close().await, 1009);

    // A continuation with nothing to continue.
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    client.stream.send(fragment(Data::Continue, true)).await.unwrap();
    assert_eq!(client.expect_close().await, 1002);

    // A text frame that is not UTF-8: 1007 (RFC 6455 7.4.1), not a framing error; also when the
    // bytes that break it are split across fragments.
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let invalid = Frame::message(vec![0xff, 0xfe], OpCode::Data(Data::Text), true);
    client.stream.send(Message::Frame(invalid)).await.unwrap();
    assert_eq!(client.expect_close().await, 1007);
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let mut first = Frame::message("caf\u{e9}".as_bytes()[..4].to_vec(), OpCode::Data(Data::Text), true);
    first.header_mut().is_final = false;
    client.stream.send(Message::Frame(first)).await.unwrap();
    client.stream.send(Message::Frame(Frame::message(vec![b'!'], OpCode::Data(Data::Continue), true))).await.unwrap();
    assert_eq!(client.expect_close().await, 1007);
    server.wait_for_metric("agenticai_ws_connections_closed_total{code=\"1002_protocol_error\"}", 1.0).await;
    server.wait_for_metric("agenticai_ws_connections_closed_total{code=\"1007_invalid_payload\"}", 2.0).await;
}

#[tokio::test]
async fn a_silent_peer_is_closed_after_the_timeout() {
    let server = TestServer::start(|config| {
        config.connection.ping_interval = Duration::from_secs(1);
        config.connection.client_timeout = Duration::from_secs(2);
    });
    // A raw TCP client that completes the handshake and then never answers pings.
    let (mut silent, _) = tokio_tungstenite::connect_async(server.ws_url("/ws")).await.unwrap();
    server.wait_for_metric("agenticai_ws_active_connections", 1.0).await;
    server.wait_for_metric("agenticai_ws_connections_closed_total{code=\"3011_heartbeat_timeout\"}", 1.0).await;
    // Reading now answers the pings too late: the server already gave up on this peer.
    let mut close_code = None;
    let read_to_the_end = async {
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut silent).await {
            if let Message::Close(Some(frame)) = message {
                close_code = Some(u16::from(frame.code));
            }
        }
    };
    tokio::time::timeout(common::TIMEOUT, read_to_the_end).await.expect("the connection ends");
    assert_eq!(close_code, Some(3011));
    server.wait_for_metric("agenticai_ws_active_connections", 0.0).await;

    // A client that reads (and so answers pings) stays connected past the timeout.
    let mut lively = Client::connect(&server.ws_url("/ws")).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(lively.request(json!({"action": "ping"})).await["type"], "pong");
    }
}

#[tokio::test]
async fn invalid_project_on_the_url_is_refused_before_upgrading() {
    let server = TestServer::start(|_| {});
    let error = tokio_tungstenite::connect_async(server.ws_url("/ws?project_id=has%20space")).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(response) = error else {
        panic!("expected an HTTP error: {error}")
    };
    assert_eq!(response.status(), 400);
}
