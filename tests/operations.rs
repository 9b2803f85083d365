//! Health, readiness and metrics endpoints; the drain on SIGTERM of the real binary.

pub mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{free_port, ChildServer, Client, TestServer};
use serde_json::json;

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    // EMF on, so its emitter runs too (its line format is unit-tested in src/emf.rs).
    let server = TestServer::start(|config| config.telemetry.emf_interval = Duration::from_secs(1));
    let health = common::wire::get(server.http_url("/health")).await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "OK");
    let ready = common::wire::get(server.http_url("/ready")).await;
    assert_eq!(ready.status(), 200);

    let mut client = Client::connect(&server.ws_url("/ws?project_id=p")).await;
    client.request(json!({"action": "ping"})).await;
    client.send_text("{").await;
    client.recv().await;
    let text = server.metrics().await;
    common::assert_metrics(
        &text,
        &[
            ("agenticai_ws_active_connections", 1.0),
            ("agenticai_ws_connections_opened_total", 1.0),
            ("agenticai_ws_subscriptions", 1.0),
            ("agenticai_ws_projects", 1.0),
            ("agenticai_ws_frames_in_total{action=\"ping\"}", 1.0),
            ("agenticai_ws_frames_in_total{action=\"invalid\"}", 1.0),
            ("agenticai_ws_frames_out_total{type=\"pong\"}", 1.0),
            ("agenticai_ws_frames_out_total{type=\"connected\"}", 1.0),
            ("agenticai_ws_errors_total{code=\"invalid_json\"}", 1.0),
        ],
    );
    for name in [
        "agenticai_ws_process_resident_memory_bytes",
        "agenticai_ws_process_open_fds",
        "agenticai_ws_process_cpu_seconds_total",
        "agenticai_ws_publish_fanout_size_bucket",
        "agenticai_ws_slow_consumers_closed_total",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
}

#[tokio::test]
async fn start_up_refuses_partial_queue_configuration() {
    let error = TestServer::try_start(|config| config.queues.sqs_queue_url_pm = Some("http://127.0.0.1:1/q".into()))
        .err()
        .expect("start-up fails");
    assert!(error.contains("SQS_QUEUE_URL_DEV") && error.contains("SQS_QUEUE_URL_OPS"), "{error}");
}

#[test]
fn bad_environment_values_stop_start_up_naming_the_variable() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_agenticai-websocket")).env("WEBSOCKET_PORT", "eighty").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WEBSOCKET_PORT"), "{stderr}");

    let help = Command::new(env!("CARGO_BIN_EXE_agenticai-websocket")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for variable in ["WEBSOCKET_HOST", "SQS_QUEUE_URL_OPS", "DYNAMODB_TABLE_NAME", "PUBLISH_API_KEYS", "DRAIN_SECONDS"]
    {
        assert!(help.contains(variable), "--help does not document {variable}");
    }
}

/// SIGTERM: /ready turns 503, new connections are refused, in-flight forwards are confirmed,
/// every client gets 1012 spread over the drain window, and the process exits 0.
#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agenticai-websocket"))
        .env("WEBSOCKET_HOST", "127.0.0.1")
        .env("WEBSOCKET_PORT", port.to_string())
        .env("DATA_DIR", data.path())
        .env("DRAIN_SECONDS", "2")
        // The forward sent just before SIGTERM is still waiting in its batch when the drain
        // reaches its connection: the drain must wait for its answer.
        .env("SQS_BATCH_LINGER_MS", "1500")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("http://{base}/ready")).await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(started.elapsed() < Duration::from_secs(20), "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Client::connect(&format!("ws://{base}/ws?project_id=p")).await);
    }
    clients[0].send(json!({"action": "forward", "type": "qa", "message_id": "last-words", "project_id": "p"})).await;

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let signalled = Instant::now();

    let mut became_unready = false;
    for _ in 0..40 {
        if let Ok(response) = reqwest::get(format!("http://{base}/ready")).await {
            if response.status() == 503 {
                became_unready = true;
                let refused = tokio_tungstenite::connect_async(format!("ws://{base}/ws")).await;
                assert!(refused.is_err(), "a new connection was accepted while draining");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(became_unready, "/ready never answered 503 during the drain");

    let mut first = clients.remove(0);
    let closing: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                assert_eq!(client.expect_close().await, 1012);
                signalled.elapsed()
            })
        })
        .collect();
    let confirmation = first.recv_type("forward_confirmed").await;
    assert_eq!(confirmation["message_id"], "last-words");
    assert_eq!(first.expect_close().await, 1012);
    let mut closes = Vec::new();
    for closed in closing {
        closes.push(closed.await.unwrap());
    }
    let spread = closes.iter().max().unwrap().saturating_sub(*closes.iter().min().unwrap());
    assert!(spread >= Duration::from_millis(1000), "closes were not spread over the 2 s window: {spread:?}");

    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "exit status {exit}");
    assert!(signalled.elapsed() < Duration::from_secs(10), "drain took {:?}", signalled.elapsed());
    let spooled = std::fs::read_to_string(data.path().join("spool/qa.jsonl")).unwrap();
    assert!(spooled.contains("last-words"));
}

#[tokio::test]
async fn cors_admits_only_the_configured_origins_to_the_api() {
    let server = TestServer::start(|config| config.access.cors_allowed_origins = vec!["https://dash.example".into()]);
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, server.http_url("/api/v1/publish"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization,content-type")
            .send()
    };
    let allowed = preflight("https://dash.example").await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://dash.example");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());

    // WebSocket upgrades are not subject to the API's CORS policy. (Their own Origin rule admits,
    // without tokens, pages of this machine and ALLOWED_ORIGINS: tests/cross_site.rs.)
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(server.ws_url("/ws")).unwrap();
    request.headers_mut().insert("Origin", "http://localhost:5173".parse().unwrap());
    let (mut stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let greeting = futures_util::StreamExt::next(&mut stream).await.unwrap().unwrap();
    assert!(greeting.into_text().unwrap().contains("connected"));
}

/// Every bad setting stops start-up the same way: exit status 2 and `invalid configuration:
/// VARIABLE: reason`, naming the variable first, and never printing a password.
#[test]
fn every_bad_setting_exits_2_naming_its_variable() {
    let data = tempfile::tempdir().unwrap();
    let a_file = data.path().join("a-file");
    std::fs::write(&a_file, b"").unwrap();
    let cases: [(&str, String); 12] = [
        ("WEBSOCKET_PORT", "eighty".into()),
        ("REDIS_URL", "foo".into()),
        ("REDIS_URL", "redis://:hunter2@".into()),
        ("DATA_DIR", a_file.display().to_string()),
        ("SQS_QUEUE_URL_UPDATES", "garbage".into()),
        ("CORS_ALLOWED_ORIGINS", "notanorigin".into()),
        ("RUST_LOG", "verbose".into()),
        ("LOG_FORMAT", "xml".into()),
        ("JWT_SECRET", "too-short".into()),
        ("PING_INTERVAL_SECS", "0".into()),
        ("HTTP_REQUEST_TIMEOUT_SECS", "1500ms".into()),
        ("MAX_FRAME_BYTES", "0".into()),
    ];
    for (variable, value) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_agenticai-websocket"))
            .env(variable, &value)
            .env("WEBSOCKET_HOST", "127.0.0.1")
            .env("DATA_DIR", if variable == "DATA_DIR" { value.clone() } else { data.path().display().to_string() })
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}={value}: {stderr}");
        assert!(stderr.starts_with(&format!("invalid configuration: {variable}")), "{variable}={value}: {stderr}");
        assert!(!stderr.contains("hunter2"), "the password was printed: {stderr}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_agenticai-websocket")).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("RUST_LOG"), "--help documents RUST_LOG");
}

/// A client that vanishes without a close frame is recorded with 1006, one that closes with 1000.
#[tokio::test]
async fn a_lost_connection_is_recorded_as_1006() {
    let server = TestServer::start(|_| {});
    let lost = Client::connect(&server.ws_url("/ws")).await;
    let lost_id = lost.connection_id.clone();
    drop(lost); // the socket is closed without a close frame
    let mut polite = Client::connect(&server.ws_url("/ws")).await;
    let polite_id = polite.connection_id.clone();
    polite.stream.close(None).await.unwrap();
    server.wait_for_metric("agenticai_ws_active_connections", 0.0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = std::fs::read_to_string(server.data_dir.join("records/records.jsonl")).unwrap_or_default();
        let code_of = |id: &str| {
            records.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()).find_map(|record| {
                let item = record.get("item").cloned().unwrap_or(record);
                (item["connection_id"] == id).then(|| item["close_code"].as_u64()).flatten()
            })
        };
        if let (Some(lost_code), Some(polite_code)) = (code_of(&lost_id), code_of(&polite_id)) {
            assert_eq!(lost_code, 1006);
            assert_eq!(polite_code, 1000);
            break;
        }
        assert!(Instant::now() < deadline, "connection records missing: {records}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_last_emf_interval_is_printed_at_shutdown() {
    // An interval far longer than the test: every count in the output is from the final lines.
    let mut server = ChildServer::spawn_with_stdout(&[("EMF_INTERVAL_SECS", "3600".into())], Stdio::piped()).await;
    let base = format!("127.0.0.1:{}", server.port);
    let mut client = Client::connect(&format!("ws://{base}/ws")).await;
    let confirmed =
        client.request(json!({"action": "forward", "type": "qa", "project_id": "p", "message_id": "m"})).await;
    assert_eq!(confirmed["type"], "forward_confirmed", "{confirmed}");
    drop(client);

    assert!(Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap().success());
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut server.child.stdout.take().expect("piped stdout"), &mut stdout).unwrap();
    assert!(server.child.wait().unwrap().success());
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line.get("_aws").is_some())
        .collect();
    let forwarded: u64 = lines.iter().filter_map(|line| line["MessagesForwarded"].as_u64()).sum();
    let qa = lines.iter().rev().find(|line| line["Queue"] == "qa").expect("a qa line");
    assert_eq!(forwarded, 1, "the forward is counted once, in the final lines");
    assert_eq!(qa["ForwardsConfirmed"], 1);
    assert_eq!(qa["EntriesPerBatch"], 1.0);
}

/// HTTP's own conventions: a 401 says how to authenticate (RFC 9110 11.6.1), an unknown path is
/// a 404 in the API's error shape, a wrong method a 405 naming the right ones.
#[tokio::test]
async fn refusals_follow_http_a_401_challenges_a_404_is_json_a_405_says_allow() {
    let server = TestServer::start(|config| {
        config.access.publish_api_keys = vec!["the-key".into()];
        config.access.jwt_secret = Some("a-development-secret-of-32-bytes!".into());
    });
    let http = reqwest::Client::new();
    let challenge = "Bearer realm=\"agenticai-websocket\"";

    let no_key = http.get(server.http_url("/api/v1/projects/p/messages")).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    assert_eq!(no_key.headers()["www-authenticate"], challenge);
    let bad_token =
        http.get(server.http_url("/api/v1/projects/p/history")).bearer_auth("not.a.jwt").send().await.unwrap();
    assert_eq!(bad_token.status(), 401);
    assert_eq!(bad_token.headers()["www-authenticate"], challenge);
    let upgrade = common::refused_upgrade(server.ws_url("/ws?token=not.a.jwt")).await;
    assert_eq!(upgrade.status, 401);

    for path in ["/nowhere", "/api/v1/nothing", "/api/v1/projects/p/unknown"] {
        let missing = http.get(server.http_url(path)).send().await.unwrap();
        assert_eq!(missing.status(), 404, "{path}");
        let body: serde_json::Value = missing.json().await.unwrap();
        assert_eq!(
            (body["type"].as_str(), body["code"].as_str()),
            (Some("error"), Some("not_found")),
            "{path}: {body}"
        );
    }

    for (method, path, allow) in [
        (reqwest::Method::GET, "/api/v1/publish", "POST"),
        (reqwest::Method::POST, "/health", "GET"),
        (reqwest::Method::DELETE, "/api/v1/projects/p/approvals", "GET, POST"),
        (reqwest::Method::PUT, "/api/v1/projects/p/streams/s/append", "POST"),
        (reqwest::Method::POST, "/metrics", "GET"),
    ] {
        let wrong = http.request(method.clone(), server.http_url(path)).send().await.unwrap();
        assert_eq!(wrong.status(), 405, "{method} {path}");
        assert_eq!(wrong.headers()["allow"], allow, "{method} {path}");
        let body: serde_json::Value = wrong.json().await.unwrap();
        assert_eq!(body["type"], "error", "{body}");
    }
}
