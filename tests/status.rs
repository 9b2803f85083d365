//! The status page and `GET /api/v1/stats`: the figures a running server reports, how they
//! move under load, and who may read them. (The page in a real browser: scripts/checks/status-page-test.sh.)

pub mod common;

use std::time::{Duration, Instant};

use common::{
    tokens::{self, claims, hs256},
    Client, TestServer, TIMEOUT,
};
use serde_json::{json, Value};

async fn stats(server: &TestServer, query: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(server.http_url(&format!("/api/v1/stats{query}")));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    common::wire::send(request).await
}

async fn stats_json(server: &TestServer, query: &str) -> Value {
    let response = stats(server, query, None).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON body")
}

/// Polls the stats until `accept` holds (the sampler reads the registry once a second).
async fn wait_for_stats(server: &TestServer, accept: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let report = stats_json(server, "").await;
        if accept(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "the figures never matched: {report:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stats_report_the_servers_figures_and_follow_the_load() {
    let server = TestServer::start(|_| {});
    let idle = stats_json(&server, "").await;
    assert_eq!(idle["phase"], "ready");
    assert_eq!(idle["draining"], false);
    assert_eq!(idle["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(idle["connections"]["active"], 0);
    assert_eq!(idle["redis"], json!({"configured": false, "connected": false, "reconnects_total": 0}));
    for queue in ["pm", "dev", "qa", "ops"] {
        let figures = &idle["forwards"]["queues"][queue];
        for field in ["waiting", "in_flight", "confirmed_per_second", "failed_per_second", "confirmed_total"] {
            assert!(figures[field].is_number(), "{queue}.{field} in {idle:#}");
        }
    }
    for section in ["persistence", "authentication", "limits", "publications", "deliveries"] {
        assert!(idle[section].is_object(), "{section} in {idle:#}");
    }

    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(&server.ws_url("/ws")).await;
        client.request(json!({"action": "subscribe", "project_id": "status-p"})).await;
        clients.push(client);
    }
    let mut forwarder = clients.pop().expect("three clients");
    let confirmed = forwarder
        .request(
            json!({"action": "forward", "type": "dev", "message_id": "status-1", "project_id": "status-p", "data": {}}),
        )
        .await;
    assert_eq!(confirmed["type"], "forward_confirmed", "{confirmed}");
    clients.push(forwarder);
    for _ in 0..5 {
        assert_eq!(server.publish(json!({"project_id": "status-p", "data": {"n": 1}})).await.status(), 200);
    }
    let busy = wait_for_stats(&server, |report| {
        report["deliveries"]["total"] == 15 && report["forwards"]["queues"]["dev"]["confirmed_total"] == 1
    })
    .await;
    assert_eq!(busy["connections"]["active"], 3);
    assert_eq!(busy["connections"]["opened_total"], 3);
    assert_eq!(busy["projects"], 1);
    assert_eq!(busy["subscriptions"], 3);
    assert_eq!(busy["publications"]["total"]["http"], 5);
    assert!(busy["uptime_seconds"].as_u64().is_some());

    // The rates of the second in which the publications happened; and the charts' series.
    let with_history = stats_json(&server, "?history=300").await;
    let points = with_history["history"].as_array().expect("history");
    assert!(!points.is_empty() && points.len() <= 300, "{} points", points.len());
    let delivered: f64 = points.iter().map(|point| point["deliveries_per_second"].as_f64().unwrap()).sum();
    assert!(delivered > 0.0, "no delivery rate in {points:?}");
    let newest = points.last().expect("a point");
    for field in
        ["t", "active", "opened_per_second", "closed_per_second", "publications_per_second", "confirmed_per_second"]
    {
        assert!(newest[field].is_number(), "{field} in {newest}");
    }
    assert!(stats_json(&server, "").await.get("history").is_none());

    drop(clients);
    let closed = wait_for_stats(&server, |report| report["connections"]["active"] == 0).await;
    assert_eq!(sum(&closed["connections"]["closed_total"]), 3, "{closed:#}");
}

fn sum(counts: &Value) -> u64 {
    counts.as_object().map_or(0, |counts| counts.values().filter_map(Value::as_u64).sum())
}

#[tokio::test]
async fn the_page_and_its_assets_are_embedded_with_a_strict_policy() {
    let server = TestServer::start(|config| config.access.publish_api_keys = vec!["status-key".into()]);
    for (path, content_type) in
        [("/status", "text/html"), ("/status/app.js", "text/javascript"), ("/status/style.css", "text/css")]
    {
        let response = common::wire::get(server.http_url(path)).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(headers[reqwest::header::CONTENT_TYPE].to_str().unwrap().starts_with(content_type), "{path}");
        let policy = headers[reqwest::header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    }
    let page = common::wire::get(server.http_url("/status")).await.text().await.unwrap();
    assert!(page.contains("/status/app.js") && page.contains("name=\"viewport\""));
    assert!(!page.contains("http://") && !page.contains("https://"), "the page loads nothing from elsewhere");
    // The shell holds no figures: without the key the figures stay closed.
    assert_eq!(stats(&server, "", None).await.status(), 401);
}

#[tokio::test]
async fn stats_need_a_publish_key_or_an_admin_token() {
    let server = TestServer::start(|config| {
        config.access.publish_api_keys = vec!["status-key".into()];
        config.access.jwt_secret = Some(tokens::SECRET.into());
    });
    let refused = stats(&server, "", None).await;
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized", "{body}");
    assert_eq!(stats(&server, "", Some("not-the-key")).await.status(), 401);
    assert_eq!(stats(&server, "", Some("status-key")).await.status(), 200);

    let admin = hs256(&claims("operator", &[], 600, json!({"scope": "admin"})));
    let report: Value = stats(&server, "", Some(&admin)).await.json().await.unwrap();
    assert_eq!(report["phase"], "ready");
    let subscriber = hs256(&claims("reader", &["*"], 600, json!({"scope": "subscribe"})));
    assert_eq!(stats(&server, "", Some(&subscriber)).await.status(), 403);
    let publisher = hs256(&claims("service", &["*"], 600, json!({"scope": "publish"})));
    assert_eq!(stats(&server, "", Some(&publisher)).await.status(), 403);
    let forged = tokens::hs256_with_secret(
        b"another-secret-that-is-32-bytes-long!",
        &claims("x", &[], 600, json!({"scope": "admin"})),
    );
    assert_eq!(stats(&server, "", Some(&forged)).await.status(), 401);
}

#[tokio::test]
async fn without_keys_stats_are_open_on_loopback_to_loopback_hosts_only() {
    let server = TestServer::start(|_| {});
    assert_eq!(stats(&server, "", None).await.status(), 200);
    let rebound = common::wire::send(
        reqwest::Client::new().get(server.http_url("/api/v1/stats")).header(reqwest::header::HOST, "evil.example"),
    )
    .await;
    assert_eq!(rebound.status(), 403);
}

#[tokio::test]
async fn with_an_internal_port_the_operator_endpoints_answer_there_without_a_key_and_404_on_the_public_port() {
    let server = TestServer::start(|config| {
        config.server.internal_port = Some(0);
        config.access.publish_api_keys = vec!["status-key".into()];
    });
    let internal = server.internal_addr.expect("the internal port is bound");
    assert_ne!(internal.port(), server.addr.port());
    let get = |url: String| async move { common::wire::get(url).await };
    let operator_paths = ["/metrics", "/status", "/status/app.js", "/status/style.css", "/api/v1/stats"];

    // The public port: the operator endpoints are not there, even with the key; the rest is.
    for path in operator_paths {
        assert_eq!(get(server.http_url(path)).await.status(), 404, "{path} on the public port");
    }
    assert_eq!(stats(&server, "", Some("status-key")).await.status(), 404);
    assert_eq!(get(server.http_url("/health")).await.status(), 200);
    assert_eq!(get(server.http_url("/ready")).await.status(), 200);
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");

    // The internal port: every operator endpoint, with no key.
    for path in operator_paths {
        assert_eq!(get(format!("http://{internal}{path}")).await.status(), 200, "{path} on the internal port");
    }
    let metrics = get(format!("http://{internal}/metrics")).await.text().await.unwrap();
    assert_eq!(common::metric_value(&metrics, "agenticai_ws_active_connections"), 1.0, "{metrics}");
    let report: Value = get(format!("http://{internal}/api/v1/stats")).await.json().await.unwrap();
    assert_eq!(report["phase"], "ready", "{report}");

    // And nothing else: no WebSocket, no API, no health checks there.
    for path in ["/", "/ws", "/health", "/ready", "/api/v1/projects/p/history"] {
        assert_eq!(get(format!("http://{internal}{path}")).await.status(), 404, "{path} on the internal port");
    }
    let publish = common::wire::send(
        reqwest::Client::new()
            .post(format!("http://{internal}/api/v1/publish"))
            .bearer_auth("status-key")
            .json(&json!({"project_id": "p", "data": 1})),
    )
    .await;
    assert_eq!(publish.status(), 404);
    let upgrade = common::refused_upgrade(format!("ws://{internal}/ws")).await;
    assert_eq!(upgrade.status, 404);
}
