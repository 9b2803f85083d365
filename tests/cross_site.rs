//! A web page in the local user's browser must not drive a gateway that trusts this machine
//! (issue 22, item 1). Without tokens, the gateway trusts its loopback callers; browsers send
//! `Origin` on every WebSocket upgrade and apply no CORS to WebSockets, so a page on any site
//! could otherwise `publish`, `forward` and `subscribe` through the user's browser, and a
//! DNS-rebound name (`Host: evil.example` resolving to 127.0.0.1) could too. Through real sockets:
//! in open mode (loopback bind) and protected mode (0.0.0.0, the browser on this machine).

pub mod common;

use common::{tokens, Client, TestServer};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, handshake::client::Request, http::HeaderValue};

const FOREIGN_ORIGINS: [&str; 5] = [
    "https://evil.example",
    "http://evil.example:8080",
    "null",
    "http://localhost.evil.example",
    "http://127.0.0.1.evil.example:3000",
];

/// Origins of pages served from this machine: a dashboard's dev server on any local port.
const LOOPBACK_ORIGINS: [&str; 6] = [
    "http://localhost",
    "http://localhost:5173",
    "http://127.0.0.1:8080",
    "http://[::1]:3000",
    "https://localhost:8443",
    "http://app.localhost:3000",
];

/// The upgrade of `/ws` on the server's port, addressed to 127.0.0.1 (the server may be bound
/// to 0.0.0.0), with extra headers.
fn upgrade(server: &TestServer, headers: &[(&'static str, &str)]) -> Request {
    let mut request = format!("ws://127.0.0.1:{}/ws", server.addr.port()).into_client_request().expect("a URL");
    for (name, value) in headers {
        request.headers_mut().insert(*name, HeaderValue::from_str(value).expect("a header value"));
    }
    request
}

/// The status and JSON body of a refused upgrade.
async fn refused(request: Request) -> (u16, Value) {
    let refused = common::refused_upgrade(request).await;
    (refused.status, refused.body)
}

/// Asserts the page at `origin` cannot open a connection: 403 `forbidden`, naming the setting.
async fn assert_origin_refused(server: &TestServer, origin: &str) {
    let (status, body) = refused(upgrade(server, &[("Origin", origin)])).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{origin}: {body}");
    assert!(body["message"].as_str().is_some_and(|message| message.contains("ALLOWED_ORIGINS")), "{body}");
}

/// Asserts a connection opens and can use it (a `subscribe` here).
async fn assert_connects(request: Request) {
    let mut client = Client::connect_with(request).await;
    let answer = client.request(json!({"action": "subscribe", "project_id": "p", "request_id": 1})).await;
    assert_eq!(answer["type"], "subscription_confirmed", "{answer}");
}

fn protected_mode_server(configure: impl FnOnce(&mut agenticai_websocket::config::Config)) -> TestServer {
    TestServer::start(|config| {
        config.server.host = "0.0.0.0".into();
        configure(config);
    })
}

#[tokio::test]
async fn open_mode_refuses_pages_of_other_sites_and_keeps_local_pages_and_non_browser_clients() {
    let server = TestServer::start(|_| {});
    for origin in FOREIGN_ORIGINS {
        assert_origin_refused(&server, origin).await;
    }
    for origin in LOOPBACK_ORIGINS {
        Client::connect_with(upgrade(&server, &[("Origin", origin)])).await;
    }
    // The README's browser snippet, from a page this machine serves on another port.
    assert_connects(upgrade(&server, &[("Origin", &format!("http://localhost:{}", common::free_port()))])).await;
    // Agents, websocat and the Python client send no Origin.
    assert_connects(upgrade(&server, &[])).await;
}

#[tokio::test]
async fn open_mode_refuses_an_upgrade_addressed_to_a_rebound_name() {
    let server = TestServer::start(|_| {});
    let port = server.addr.port();
    let rebound = format!("evil.example:{port}");
    let page = format!("http://evil.example:{port}");
    for headers in [vec![("Host", rebound.as_str())], vec![("Host", rebound.as_str()), ("Origin", page.as_str())]] {
        let (status, body) = refused(upgrade(&server, &headers)).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{headers:?}: {body}");
    }
    for host in [format!("localhost:{port}"), format!("[::1]:{port}"), format!("127.0.0.1:{port}")] {
        Client::connect_with(upgrade(&server, &[("Host", &host)])).await;
    }
}

#[tokio::test]
async fn protected_mode_refuses_pages_of_other_sites_and_rebound_names_in_the_local_browser() {
    let server = protected_mode_server(|_| {});
    for origin in FOREIGN_ORIGINS {
        assert_origin_refused(&server, origin).await;
    }
    let (status, _) = refused(upgrade(&server, &[("Host", "evil.example")])).await;
    assert_eq!(status, 403);
    assert_connects(upgrade(&server, &[("Origin", "http://localhost:5173")])).await;
    assert_connects(upgrade(&server, &[])).await;
}

#[tokio::test]
async fn allowed_origins_adds_sites_to_the_local_pages_without_tokens() {
    let server = TestServer::start(|config| config.access.allowed_origins = vec!["https://dash.example.com".into()]);
    assert_connects(upgrade(&server, &[("Origin", "https://dash.example.com")])).await;
    assert_connects(upgrade(&server, &[("Origin", "http://localhost:5173")])).await;
    assert_origin_refused(&server, "https://evil.example").await;
}

#[tokio::test]
async fn allow_anonymous_does_not_open_the_gateway_to_other_sites_pages() {
    let server = protected_mode_server(|config| config.access.allow_anonymous = true);
    assert_origin_refused(&server, "https://evil.example").await;
    // Anonymous connections from anywhere, on purpose: the name a client uses is not a question.
    assert_connects(upgrade(&server, &[("Host", "gateway.example")])).await;
}

#[tokio::test]
async fn with_tokens_any_origin_and_name_may_connect_as_before_the_token_protects() {
    let server = TestServer::start(|config| config.access.jwt_secret = Some(tokens::SECRET.into()));
    let token = tokens::hs256(&tokens::claims("alice", &["p"], 300, json!({})));
    let bearer = format!("Bearer {token}");
    let request =
        upgrade(&server, &[("Origin", "https://evil.example"), ("Host", "evil.example"), ("Authorization", &bearer)]);
    let mut client = Client::connect_with(request).await;
    let answer = client.request(json!({"action": "subscribe", "project_id": "p", "request_id": 1})).await;
    assert_eq!(answer["type"], "subscription_confirmed", "{answer}");
}
