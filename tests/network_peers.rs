//! Protected mode seen from the network (issue 22, items 2 and 8a): bound to 0.0.0.0 without
//! tokens, the gateway serves anonymous callers on this machine only, over WebSocket and HTTP
//! alike, and behind a trusted proxy on this machine it judges the client the proxy forwarded,
//! not the proxy's loopback address. The network peer is a client in a network namespace of its
//! own (tests/common/netns.rs), so the server sees a real non-loopback address.

pub mod common;

use std::{
    io::{self, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
};

use common::{netns::NetworkNamespace, Client, TestServer};
use serde_json::{json, Value};

const KEY: &str = "network-peers-publish-key";
const PROJECT: &str = "shared-plans";

/// Bound to every address, no tokens, no ALLOW_ANONYMOUS: protected mode. A publish key, so
/// there is something to read and a credential to present.
fn protected_mode_server(trusted_proxies: &[&str]) -> TestServer {
    let trusted_proxies = trusted_proxies.iter().map(|proxy| proxy.to_string()).collect();
    TestServer::start(move |config| {
        config.server.host = "0.0.0.0".into();
        config.access.publish_api_keys = vec![KEY.into()];
        config.access.trusted_proxies = trusted_proxies;
    })
}

/// Publishes one message with the key and holds a subscriber, both from loopback: a history
/// and a presence to read. The subscriber must be kept.
async fn project_with_data(server: &TestServer) -> Client {
    let port = server.addr.port();
    let mut subscriber = Client::connect(&format!("ws://127.0.0.1:{port}/ws")).await;
    let answer = subscriber.request(json!({"action": "subscribe", "project_id": PROJECT, "request_id": 1})).await;
    assert_eq!(answer["type"], "subscription_confirmed", "{answer}");
    let published = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/publish"))
        .bearer_auth(KEY)
        .json(&json!({"project_id": PROJECT, "data": "the launch date"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 200);
    subscriber
}

/// The project-data routes of the API, as paths.
fn project_routes() -> [String; 3] {
    ["history", "presence", "messages"].map(|route| format!("/api/v1/projects/{PROJECT}/{route}"))
}

fn assert_unauthorized(what: &str, status: u16, body: &Value) {
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{what}: {body}");
    assert!(body.get("publications").is_none() && body.get("clients").is_none(), "{what} leaked data: {body}");
}

#[tokio::test]
async fn protected_mode_serves_no_project_data_to_an_anonymous_network_peer() {
    let server = protected_mode_server(&[]);
    let _subscriber = project_with_data(&server).await;
    let namespace = NetworkNamespace::create();
    let base = format!("http://{}:{}", namespace.host_address, server.addr.port());

    let upgrade = namespace.websocket_upgrade(&namespace.host_address.to_string(), server.addr.port(), "/ws", &[]);
    assert_eq!(upgrade.status, 401, "the WebSocket: {upgrade:?}");
    for route in project_routes() {
        let (status, body) = namespace.http_get(&format!("{base}{route}"), &[]);
        assert_unauthorized(&route, status, &body);
    }

    // A credential is honoured from anywhere.
    let bearer = format!("Authorization: Bearer {KEY}");
    let (status, history) = namespace.http_get(&format!("{base}/api/v1/projects/{PROJECT}/history"), &[&bearer]);
    assert_eq!((status, &history["publications"][0]["data"]), (200, &json!("the launch date")), "{history}");
    let (status, presence) = namespace.http_get(&format!("{base}/api/v1/projects/{PROJECT}/presence"), &[&bearer]);
    assert_eq!((status, &presence["num_clients"]), (200, &json!(1)), "{presence}");

    // This machine's callers still need nothing.
    let local = format!("http://127.0.0.1:{}/api/v1/projects/{PROJECT}/history", server.addr.port());
    let history = common::get_json(local).await;
    assert_eq!(history["publications"][0]["data"], "the launch date", "{history}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_on_this_machine_protected_mode_judges_the_forwarded_client() {
    let server = protected_mode_server(&["127.0.0.1"]);
    let _subscriber = project_with_data(&server).await;
    let proxy_port = start_forwarding_proxy(server.addr.port());
    let namespace = NetworkNamespace::create();
    let proxy_host = namespace.host_address.to_string();

    // A client on the network, through the proxy: the gateway's TCP peer is 127.0.0.1.
    let upgrade = namespace.websocket_upgrade(&proxy_host, proxy_port, "/ws", &[]);
    assert_eq!(upgrade.status, 401, "the WebSocket through the proxy: {upgrade:?}");
    assert!(upgrade.greeting.is_none());
    for route in project_routes() {
        let (status, body) = namespace.http_get(&format!("http://{proxy_host}:{proxy_port}{route}"), &[]);
        assert_unauthorized(&route, status, &body);
    }
    let bearer = format!("Authorization: Bearer {KEY}");
    let history = format!("http://{proxy_host}:{proxy_port}/api/v1/projects/{PROJECT}/history");
    assert_eq!(namespace.http_get(&history, &[&bearer]).0, 200, "a credential through the proxy");

    // A client on this machine, through the same proxy: still this machine's.
    let mut local = Client::connect(&format!("ws://127.0.0.1:{proxy_port}/ws")).await;
    let answer = local.request(json!({"action": "subscribe", "project_id": PROJECT, "request_id": 1})).await;
    assert_eq!(answer["type"], "subscription_confirmed", "{answer}");
}

/// A reverse proxy on this machine, as nginx with `proxy_add_x_forwarded_for`: it appends the
/// address that connected to it to `X-Forwarded-For` and passes the request to the gateway over
/// loopback. One request per connection (what these tests send). Returns its port (on every
/// address); it lives as long as the test binary.
fn start_forwarding_proxy(gateway_port: u16) -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").expect("bind the proxy");
    let port = listener.local_addr().expect("the proxy's address").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || relay(client, gateway_port));
        }
    });
    port
}

fn relay(mut client: TcpStream, gateway_port: u16) -> io::Result<()> {
    let client_address = client.peer_addr()?.ip();
    // A byte at a time, so nothing past the head is taken from the socket here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    head.truncate(head.len() - 2);
    head.extend_from_slice(format!("X-Forwarded-For: {client_address}\r\n\r\n").as_bytes());
    let mut gateway = TcpStream::connect(("127.0.0.1", gateway_port))?;
    gateway.write_all(&head)?;
    let (mut from_client, mut to_gateway) = (client.try_clone()?, gateway.try_clone()?);
    let upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut from_client, &mut to_gateway);
        let _ = to_gateway.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut gateway, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = upstream.join();
    Ok(())
}
