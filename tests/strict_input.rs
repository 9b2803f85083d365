//! Input that parses but is not what it seems, and HTTP requests a browser page or a slow
//! client could send: each gets a clear error, and nothing reaches a queue or a subscriber.

pub mod common;

use std::time::{Duration, Instant};

use common::{raw::RawSocket, Client, TestServer};
use serde_json::{json, Value};

#[tokio::test]
async fn client_json_reaches_queues_and_subscribers_digit_for_digit() {
    let server = TestServer::start(|_| {});
    let mut watcher = Client::connect(&server.ws_url("/ws?project_id=exact")).await;
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let big = "123456789012345678901234567890";
    client
        .send_text(&format!(
            r#"{{"action":"forward","type":"dev","project_id":"exact","message_id":"m-big","data":{{"n":{big},"f":0.30000000000000000001}},"request_id":98765432109876543210987}}"#
        ))
        .await;
    let confirmed = client.stream_text().await;
    assert!(confirmed.contains(r#""request_id":98765432109876543210987"#), "{confirmed}");
    let spooled = std::fs::read_to_string(server.data_dir.join("spool/dev.jsonl")).unwrap();
    assert!(spooled.contains(&format!(r#""n":{big}"#)) && spooled.contains("0.30000000000000000001"), "{spooled}");

    let published = server
        .publish(serde_json::from_str(&format!(r#"{{"project_id":"exact","data":{{"n":{big}}}}}"#)).unwrap())
        .await;
    assert_eq!(published.status(), 200);
    let delivered = watcher.stream_text().await;
    assert!(delivered.contains(&format!(r#""data":{{"n":{big}}}"#)), "{delivered}");
}

#[tokio::test]
async fn a_request_naming_a_key_twice_is_refused_and_not_forwarded() {
    let server = TestServer::start(|_| {});
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    client
        .send_text(
            r#"{"action":"forward","type":"dev","type":"qa","project_id":"p","message_id":"dup","request_id":"r"}"#,
        )
        .await;
    let error = client.recv().await;
    assert_eq!(error["code"], "invalid_request", "{error}");
    assert!(error["message"].as_str().unwrap().contains("\"type\""), "{error}");
    // The request id is unknown: a client cannot know which of its keys was meant.
    client.expect_silence(Duration::from_millis(200)).await;
    for queue in ["dev", "qa"] {
        let spooled = std::fs::read_to_string(server.data_dir.join(format!("spool/{queue}.jsonl"))).unwrap_or_default();
        assert!(!spooled.contains("dup"), "{queue} got the forward: {spooled}");
    }
    let http = reqwest::Client::new()
        .post(server.http_url("/api/v1/publish"))
        .header("content-type", "application/json")
        .body(r#"{"project_id":"p","project_id":"q","data":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(http.status(), 400);
    assert_eq!(http.json::<Value>().await.unwrap()["code"], "invalid_request");
}

#[tokio::test]
async fn project_ids_with_invisible_or_bidi_characters_are_refused() {
    let server = TestServer::start(|_| {});
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    for id in ["acme\u{202E}gpj.exe", "ac\u{200B}me", "\u{FEFF}acme"] {
        let error = client.request(json!({"action": "subscribe", "project_id": id})).await;
        assert_eq!(error["code"], "invalid_project_id", "{id:?}: {error}");
    }
    let refused = tokio_tungstenite::connect_async(server.ws_url("/ws?project_id=acme%E2%80%AE")).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(response) = refused else { panic!("expected an HTTP refusal") };
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn open_publishing_takes_only_json_addressed_to_a_loopback_host() {
    let server = TestServer::start(|_| {});
    let url = server.http_url("/api/v1/publish");
    let http = reqwest::Client::new();
    let body = r#"{"project_id":"p","data":1}"#;
    // A cross-site form or text/plain fetch skips the CORS preflight: refused.
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let response = http.post(&url).header("content-type", content_type).body(body).send().await.unwrap();
        assert_eq!(response.status(), 415, "{content_type}");
        assert_eq!(response.json::<Value>().await.unwrap()["code"], "invalid_request");
    }
    let untyped = http.post(&url).body(body).send().await.unwrap();
    assert_eq!(untyped.status(), 415);
    // A DNS-rebound name reaches the loopback socket but not the API.
    let rebound =
        http.post(&url).header("host", "attacker.example:8080").json(&json!({"project_id": "p"})).send().await.unwrap();
    assert_eq!(rebound.status(), 403);
    assert_eq!(rebound.json::<Value>().await.unwrap()["code"], "forbidden");
    let history = http
        .get(server.http_url("/api/v1/projects/p/history"))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(history.status(), 403);
    let by_name = http
        .post(&url)
        .header("host", format!("localhost:{}", server.addr.port()))
        .json(&json!({"project_id": "p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.status(), 200);
}

#[tokio::test]
async fn a_trickled_request_body_gets_408_and_others_are_served_meanwhile() {
    let server = TestServer::start(|config| config.server.http_request_timeout = Duration::from_secs(1));
    let started = Instant::now();
    let mut trickling = Vec::new();
    for _ in 0..20 {
        let mut socket = RawSocket::connect(server.addr).await;
        let head = format!(
            "POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
            server.addr.port()
        );
        socket.send(head.as_bytes()).await.unwrap();
        trickling.push(socket);
    }
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");
    for mut socket in trickling {
        let head = socket.response_head().await;
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        assert!(head.to_ascii_lowercase().contains("application/json"), "{head}");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
}

#[tokio::test]
async fn query_string_errors_answer_in_the_json_error_shape() {
    let server = TestServer::start(|_| {});
    for path in [
        "/api/v1/projects/p/history?since=-1",
        "/api/v1/projects/p/history?limit=lots",
        "/ws?project_id=a&project_id=b",
    ] {
        let response = reqwest::get(server.http_url(path)).await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap_or_else(|error| panic!("{path}: not JSON: {error}"));
        assert_eq!(body["type"], "error", "{path}");
        assert_eq!(body["code"], "invalid_request", "{path}");
    }
}

#[tokio::test]
async fn an_http_1_0_upgrade_is_refused() {
    let server = TestServer::start(|_| {});
    let mut socket = RawSocket::connect(server.addr).await;
    let head = socket.request(&common::raw::handshake("/ws", "HTTP/1.0", server.addr)).await;
    assert!(head.contains(" 400 "), "{head}");
}

#[tokio::test]
async fn a_history_read_that_cannot_recover_lists_nothing() {
    let server = TestServer::start(|config| config.engine.history_size = 3);
    for n in 1..=5 {
        server.publish(json!({"project_id": "h", "data": n})).await;
    }
    for query in ["since=1", "since=4&epoch=not-the-epoch"] {
        let page = common::get_json(server.http_url(&format!("/api/v1/projects/h/history?{query}"))).await;
        assert_eq!(page["recovered"], false, "{query}");
        assert_eq!(page["publications"], json!([]), "{query}");
        assert_eq!(page["offset"], 5, "{query}");
    }
}
