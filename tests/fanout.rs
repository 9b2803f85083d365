//! Publishing to subscribers: HTTP and WebSocket publish, fan-out to many clients, order,
//! unsubscribe and disconnect clean-up, API keys.

pub mod common;

use std::{num::NonZeroUsize, time::Duration};

use common::{Client, TestServer};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn every_subscriber_gets_every_message_of_its_project_in_order() {
    let server = TestServer::start(|_| {});
    let projects = ["p-0", "p-1", "p-2"];
    let mut subscribers = Vec::new();
    for index in 0..30 {
        let project = projects[index % projects.len()];
        let mut client = Client::connect(&server.ws_url("/ws")).await;
        let confirmed = client.request(json!({"action": "subscribe", "project_id": project})).await;
        assert_eq!(confirmed["type"], "subscription_confirmed");
        subscribers.push((project, client));
    }
    for seq in 0..20 {
        for project in projects {
            let response = server.publish(json!({"project_id": project, "data": {"seq": seq}, "type": "tick"})).await;
            assert_eq!(response.status(), 200);
            let receipt: serde_json::Value = response.json().await.unwrap();
            assert_eq!(receipt["subscribers"], 10);
            assert_eq!(receipt["project_id"], project);
        }
    }
    for (project, client) in &mut subscribers {
        for seq in 0..20 {
            let message = client.recv().await;
            assert_eq!(message["type"], "message");
            assert_eq!(message["project_id"], *project);
            assert_eq!(message["event"], "tick");
            assert_eq!(message["data"], json!({"seq": seq}));
            assert!(message["published_at"].is_string());
            assert_eq!(message["id"].as_str().unwrap().len(), 36);
        }
        client.expect_silence(Duration::from_millis(50)).await;
    }
    assert_eq!(server.metric("agenticai_ws_deliveries_total").await, 600.0);
    assert_eq!(server.metric("agenticai_ws_publications_total{source=\"http\"}").await, 60.0);
}

#[tokio::test]
async fn websocket_publish_reaches_subscribers_and_confirms_the_count() {
    let server = TestServer::start(|_| {});
    let mut watcher = Client::connect(&server.ws_url("/ws?project_id=board")).await;
    let mut other = Client::connect(&server.ws_url("/ws?project_id=elsewhere")).await;
    let mut publisher = Client::connect(&server.ws_url("/ws")).await;
    let confirmed = publisher
        .request(
            json!({"action": "publish", "project_id": "board", "data": [1, 2], "type": "update", "request_id": "x"}),
        )
        .await;
    assert_eq!(confirmed["type"], "publish_confirmed");
    assert_eq!(confirmed["subscribers"], 1);
    assert_eq!(confirmed["request_id"], "x");
    let message = watcher.recv().await;
    assert_eq!(message["data"], json!([1, 2]));
    assert_eq!(message["id"], confirmed["id"]);
    other.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn unsubscribe_and_disconnect_clean_up() {
    let server = TestServer::start(|_| {});
    let mut staying = Client::connect(&server.ws_url("/ws?project_id=p")).await;
    let mut leaving = Client::connect(&server.ws_url("/ws?project_id=p")).await;
    leaving.request(json!({"action": "subscribe", "project_id": "q"})).await;
    server.wait_for_metric("agenticai_ws_subscriptions", 3.0).await;
    assert_eq!(server.metric("agenticai_ws_projects").await, 2.0);

    let reply = leaving.request(json!({"action": "unsubscribe", "project_id": "p"})).await;
    assert_eq!(reply["type"], "unsubscription_confirmed");
    let receipt: serde_json::Value = server.publish(json!({"project_id": "p", "data": 1})).await.json().await.unwrap();
    assert_eq!(receipt["subscribers"], 1);
    assert_eq!(staying.recv().await["data"], 1);
    leaving.expect_silence(Duration::from_millis(100)).await;

    drop(leaving);
    server.wait_for_metric("agenticai_ws_subscriptions", 1.0).await;
    server.wait_for_metric("agenticai_ws_projects", 1.0).await;
    drop(staying);
    server.wait_for_metric("agenticai_ws_active_connections", 0.0).await;
    server.wait_for_metric("agenticai_ws_subscriptions", 0.0).await;
    server.wait_for_metric("agenticai_ws_projects", 0.0).await;
    let receipt: serde_json::Value = server.publish(json!({"project_id": "p", "data": 2})).await.json().await.unwrap();
    assert_eq!(receipt["subscribers"], 0);
}

#[tokio::test]
async fn publish_needs_a_key_when_keys_are_configured() {
    let server = TestServer::start(|config| config.access.publish_api_keys = vec!["s3cret".into()]);
    let mut watcher = Client::connect(&server.ws_url("/ws?project_id=p")).await;
    let http = reqwest::Client::new();
    let body = json!({"project_id": "p", "data": "hello"});

    let anonymous = common::wire::send(http.post(server.http_url("/api/v1/publish")).json(&body)).await;
    assert_eq!(anonymous.status(), 401);
    let error: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(error["code"], "unauthorized");
    let wrong =
        common::wire::send(http.post(server.http_url("/api/v1/publish")).bearer_auth("guess").json(&body)).await;
    assert_eq!(wrong.status(), 401);
    let right =
        common::wire::send(http.post(server.http_url("/api/v1/publish")).bearer_auth("s3cret").json(&body)).await;
    assert_eq!(right.status(), 200);
    assert_eq!(watcher.recv().await["data"], "hello");

    let denied = watcher.request(json!({"action": "publish", "project_id": "p", "data": 1})).await;
    assert_eq!(denied["code"], "forbidden");

    let mut request = server.ws_url("/ws").into_client_request().unwrap();
    request.headers_mut().insert("Authorization", "Bearer s3cret".parse().unwrap());
    let (stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut keyed = Client { stream, connection_id: String::new() };
    assert_eq!(keyed.recv().await["type"], "connected");
    let confirmed = keyed.request(json!({"action": "publish", "project_id": "p", "data": 2})).await;
    assert_eq!(confirmed["type"], "publish_confirmed");
    assert_eq!(watcher.recv_type("message").await["data"], 2);
}

#[tokio::test]
async fn publish_api_rejects_bad_bodies_clearly() {
    let server = TestServer::start(|_| {});
    let http = reqwest::Client::new();
    let url = server.http_url("/api/v1/publish");
    let not_json = common::wire::send(http.post(&url).body("nope")).await;
    assert_eq!(not_json.status(), 400);
    assert_eq!(not_json.json::<serde_json::Value>().await.unwrap()["code"], "invalid_json");
    let huge =
        common::wire::send(http.post(&url).json(&json!({"project_id": "p", "data": "x".repeat(300 * 1024)}))).await;
    assert_eq!(huge.status(), 413);
    let error: serde_json::Value = huge.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert!(error["message"].as_str().unwrap().contains("MAX_FRAME_BYTES"));
    let no_project = common::wire::send(http.post(&url).json(&json!({"data": 1}))).await;
    assert_eq!(no_project.status(), 400);
    assert_eq!(no_project.json::<serde_json::Value>().await.unwrap()["code"], "invalid_project_id");
}

#[tokio::test]
async fn a_slow_consumer_is_closed_without_holding_up_the_others() {
    let server = TestServer::start(|config| {
        config.connection.outbound_queue_messages = NonZeroUsize::new(16).unwrap();
        config.connection.outbound_queue_bytes = NonZeroUsize::new(256 * 1024).unwrap();
    });
    let mut slow = Client::connect(&server.ws_url("/ws?project_id=busy")).await;
    let mut fast = Client::connect(&server.ws_url("/ws?project_id=busy")).await;
    let payload = "x".repeat(64 * 1024);
    let total = 400;
    let reader = tokio::spawn(async move {
        for seq in 0..total {
            let message = fast.recv().await;
            assert_eq!(message["data"]["seq"], seq);
        }
        fast
    });
    // The slow client reads nothing while 25 MB are published to it.
    for seq in 0..total {
        let response = server.publish(json!({"project_id": "busy", "data": {"seq": seq, "pad": payload}})).await;
        assert_eq!(response.status(), 200);
    }
    let _fast = tokio::time::timeout(Duration::from_secs(30), reader).await.expect("fast reader done").unwrap();
    server.wait_for_metric("agenticai_ws_slow_consumers_closed_total", 1.0).await;
    server.wait_for_metric("agenticai_ws_connections_closed_total{code=\"3008_slow_consumer\"}", 1.0).await;
    // When the slow client finally reads, its connection ends: with 3008 if the close frame got
    // through its full buffers, or by the server dropping the socket.
    let mut received = 0;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match futures_util::StreamExt::next(&mut slow.stream).await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_))) => received += 1,
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                    return frame.map(|frame| u16::from(frame.code));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the slow connection ends");
    assert!(ended.is_none() || ended == Some(3008), "closed with {ended:?}");
    assert!(received < total, "the slow client got everything ({received}); it was not cut off");
}

#[tokio::test]
async fn a_slow_consumer_that_reads_again_gets_the_close_code_3008() {
    // The send timeout is long enough that the server never drops the socket: the close frame
    // waits behind what the socket buffers hold, and the client finds it once it reads again.
    let server = TestServer::start(|config| {
        config.connection.outbound_queue_messages = NonZeroUsize::new(16).unwrap();
        config.connection.outbound_queue_bytes = NonZeroUsize::new(256 * 1024).unwrap();
        config.server.send_timeout = Duration::from_secs(60);
    });
    let mut slow = Client::connect(&server.ws_url("/ws?project_id=slow")).await;
    let payload = "x".repeat(64 * 1024);
    let mut published = 0;
    while server.metric("agenticai_ws_slow_consumers_closed_total").await == 0.0 {
        assert!(published < 1000, "1000 publications of 64 KiB never overflowed the outbound queue");
        let response = server.publish(json!({"project_id": "slow", "data": {"seq": published, "pad": payload}})).await;
        assert_eq!(response.status(), 200);
        published += 1;
    }
    let mut received = 0;
    let code = loop {
        match slow.next_message().await {
            tokio_tungstenite::tungstenite::Message::Text(_) => received += 1,
            tokio_tungstenite::tungstenite::Message::Close(frame) => break frame.map(|frame| u16::from(frame.code)),
            _ => {}
        }
    };
    assert_eq!(code, Some(3008), "after {received} of {published} messages");
    assert!(received < published, "the slow client got everything ({received}); it was not cut off");
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_socket_after_the_send_timeout() {
    let server = TestServer::start(|config| config.server.send_timeout = Duration::from_secs(1));
    let stuck = Client::connect(&server.ws_url("/ws?project_id=stuck")).await;
    let stuck_addr = match stuck.stream.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap(),
        _ => unreachable!("plain ws:// connection"),
    };
    assert!(common::tcp_connection_exists(server.addr, stuck_addr), "the server's side is listed");
    // 16 MB, more than the socket buffers on both sides hold: the server's writes stall.
    let payload = "x".repeat(64 * 1024);
    for seq in 0..256 {
        let response = server.publish(json!({"project_id": "stuck", "data": {"seq": seq, "pad": payload}})).await;
        assert_eq!(response.status(), 200);
    }
    // The client never reads again, yet the server's side of its socket goes away.
    let dropped = async {
        while common::tcp_connection_exists(server.addr, stuck_addr) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), dropped).await.expect("the server dropped the stuck socket");
    drop(stuck);
}

#[tokio::test]
async fn with_a_write_delay_publications_arrive_after_it_in_order() {
    let delay = Duration::from_millis(1000);
    let server = TestServer::start(|config| config.connection.write_delay = delay);
    let mut client = Client::connect(&server.ws_url("/ws?project_id=paced")).await;
    let started = std::time::Instant::now();
    for seq in 0..3 {
        let response = server.publish(json!({"project_id": "paced", "data": {"seq": seq}})).await;
        assert_eq!(response.status(), 200);
    }
    assert!(started.elapsed() < delay, "the publishes themselves are not delayed");
    for seq in 0..3 {
        assert_eq!(client.recv_type("message").await["data"]["seq"], seq);
    }
    assert!(started.elapsed() >= delay, "the first message waited out WRITE_DELAY_MS");
}
