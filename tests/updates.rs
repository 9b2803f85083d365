//! Agent updates long-polled from SQS (moto) and published to their projects; malformed ones
//! go to the dead-letter queue through the queue's redrive policy.

pub mod common;

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use common::{aws_config, create_queue, moto_endpoint, Client, TestServer};
use serde_json::json;

#[tokio::test]
async fn updates_reach_subscribers_and_malformed_ones_reach_the_dead_letter_queue() {
    let endpoint = moto_endpoint();
    let sqs = aws_sdk_sqs::Client::new(&aws_config(&endpoint).await);
    let dead_letters = create_queue(&sqs, "updates-dlq", false).await;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dead_letters)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let updates = create_queue(&sqs, "updates", false).await;
    sqs.set_queue_attributes()
        .queue_url(&updates)
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}).to_string(),
        )
        .send()
        .await
        .unwrap();
    let server = TestServer::start(|config| {
        config.aws.aws_endpoint_url = Some(endpoint.clone());
        config.queues.sqs_queue_url_updates = Some(updates.clone());
    });
    let mut watcher = Client::connect(&server.ws_url("/ws?project_id=agent-p")).await;

    for body in [
        json!({"project_id": "agent-p", "type": "task_done", "data": {"task": 1}}).to_string(),
        "this is not json".to_owned(),
        json!({"data": {"no": "project"}}).to_string(),
        json!({"project_id": "agent-p", "event": "task_done", "data": {"task": 2}}).to_string(),
    ] {
        sqs.send_message().queue_url(&updates).message_body(body).send().await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let message = watcher.recv_type("message").await;
        assert_eq!(message["event"], "task_done");
        assert!(message["offset"].as_u64().unwrap() >= 1);
        tasks.push(message["data"]["task"].as_u64().unwrap());
    }
    tasks.sort_unstable();
    assert_eq!(tasks, vec![1, 2]);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dead = Vec::new();
    while dead.len() < 2 && Instant::now() < deadline {
        let output = sqs
            .receive_message()
            .queue_url(&dead_letters)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        dead.extend(output.messages().iter().map(|m| m.body().unwrap_or_default().to_owned()));
    }
    assert_eq!(dead.len(), 2, "malformed updates in the dead-letter queue: {dead:?}");
    assert!(dead.iter().any(|body| body == "this is not json"));
    assert!(server.metric("agenticai_ws_agent_updates_total{outcome=\"malformed\"}").await >= 2.0);
    assert_eq!(server.metric("agenticai_ws_agent_updates_total{outcome=\"published\"}").await, 2.0);
    watcher.expect_silence(Duration::from_millis(200)).await;
}

/// The consumer long-polls for 20 s: an update sent at any moment of an idle poll is delivered
/// at once, not after the queue's visibility timeout (an abandoned poll would have taken it).
#[tokio::test]
async fn an_update_sent_late_in_an_idle_long_poll_arrives_at_once() {
    let endpoint = moto_endpoint();
    let sqs = aws_sdk_sqs::Client::new(&aws_config(&endpoint).await);
    let updates = create_queue(&sqs, "updates-idle-poll", false).await;
    let server = TestServer::start(|config| {
        config.aws.aws_endpoint_url = Some(endpoint.clone());
        config.queues.sqs_queue_url_updates = Some(updates.clone());
    });
    let mut watcher = Client::connect(&server.ws_url("/ws?project_id=idle-p")).await;
    // Each delivery starts a new poll, so each wait is measured from the previous delivery.
    let mut poll_started = Instant::now();
    for (task, idle_secs) in [1u64, 7, 12, 16].into_iter().enumerate() {
        tokio::time::sleep_until((poll_started + Duration::from_secs(idle_secs)).into()).await;
        let body = json!({"project_id": "idle-p", "type": "task_done", "data": {"task": task}}).to_string();
        sqs.send_message().queue_url(&updates).message_body(body).send().await.unwrap();
        let sent = Instant::now();
        let message = watcher.recv_type("message").await;
        let latency = sent.elapsed();
        assert_eq!(message["data"]["task"], task, "{message}");
        assert!(latency < Duration::from_secs(2), "sent {idle_secs} s into a poll, delivered after {latency:?}");
        poll_started = Instant::now();
    }
}

/// The drain stops intake first: an update sent once the drain has begun is not published by
/// the draining task (its clients are leaving) but left on the queue for another task.
#[tokio::test]
async fn a_draining_task_leaves_new_updates_on_the_queue() {
    let endpoint = moto_endpoint();
    let sqs = aws_sdk_sqs::Client::new(&aws_config(&endpoint).await);
    let updates = create_queue(&sqs, "updates-drain", false).await;
    // The long poll the drain abandons may still take the update at the emulator: it is then
    // visible again a second later.
    sqs.set_queue_attributes()
        .queue_url(&updates)
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .send()
        .await
        .unwrap();
    let server = TestServer::start(|config| {
        config.aws.aws_endpoint_url = Some(endpoint.clone());
        config.queues.sqs_queue_url_updates = Some(updates.clone());
        config.server.drain_window = Duration::from_secs(6);
    });
    let mut watcher = Client::connect(&server.ws_url("/ws?project_id=drain-p")).await;
    // Two connections: the drain tells the second to reconnect half-way through the window, so
    // the server is still draining (and serving /metrics) while the test looks.
    let _second = Client::connect(&server.ws_url("/ws?project_id=drain-p")).await;
    let update = |task: u64| json!({"project_id": "drain-p", "type": "task_done", "data": {"task": task}}).to_string();
    sqs.send_message().queue_url(&updates).message_body(update(1)).send().await.unwrap();
    assert_eq!(watcher.recv_type("message").await["data"]["task"], 1, "the consumer runs before the drain");

    server.begin_drain();
    let deadline = Instant::now() + Duration::from_secs(5);
    while reqwest::get(server.http_url("/ready")).await.map(|r| r.status() != 503).unwrap_or(false) {
        assert!(Instant::now() < deadline, "/ready never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqs.send_message().queue_url(&updates).message_body(update(2)).send().await.unwrap();
    // Well inside the drain window: a consumer still running would have published it by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.metric("agenticai_ws_agent_updates_total{outcome=\"published\"}").await, 1.0);
    drop(server);

    let left = common::drain_queue(&sqs, &updates, 1).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].body(), Some(update(2).as_str()));
}

/// An agent streams through the updates queue: appends sent out of order (the second before the
/// first) and one sent twice (a redelivery) end as one text in order, applied once: the one that
/// would leave a gap stays on the queue until the first is in.
#[tokio::test]
async fn a_stream_through_the_queue_applies_each_append_once_and_in_order() {
    let endpoint = moto_endpoint();
    let sqs = aws_sdk_sqs::Client::new(&aws_config(&endpoint).await);
    let updates = create_queue(&sqs, "stream-updates", false).await;
    sqs.set_queue_attributes()
        .queue_url(&updates)
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .send()
        .await
        .unwrap();
    let server = TestServer::start(|config| {
        config.aws.aws_endpoint_url = Some(endpoint.clone());
        config.queues.sqs_queue_url_updates = Some(updates.clone());
    });
    let mut watcher = Client::connect(&server.ws_url("/ws?project_id=queued")).await;
    let send = |body: serde_json::Value| sqs.send_message().queue_url(&updates).message_body(body.to_string()).send();
    send(json!({"project_id": "queued", "type": "stream_start", "stream_id": "run-1", "agent": "qa"})).await.unwrap();
    let started = watcher.recv_type("stream_started").await;
    assert_eq!((started["stream_id"].as_str(), started["agent"].as_str()), (Some("run-1"), Some("qa")));
    for (text, at) in [("world", 6), ("hello ", 0), ("hello ", 0)] {
        send(json!({"project_id": "queued", "type": "stream_append", "stream_id": "run-1", "text": text, "at": at}))
            .await
            .unwrap();
    }
    let mut text = String::new();
    while text.len() < 11 {
        let frame = watcher.recv().await;
        match frame["type"].as_str() {
            Some("stream_append") => text.push_str(frame["text"].as_str().unwrap()),
            Some("stream_snapshot") => text = frame["text"].as_str().unwrap().to_owned(),
            _ => {}
        }
        assert_eq!(
            frame.get("length").and_then(|length| length.as_u64()).unwrap_or(text.len() as u64),
            text.len() as u64
        );
    }
    assert_eq!(text, "hello world");
    send(json!({"project_id": "queued", "type": "stream_end", "stream_id": "run-1", "status": "completed"}))
        .await
        .unwrap();
    let ended = watcher.recv_type("stream_ended").await;
    assert_eq!((ended["status"].as_str(), ended["length"].as_u64()), (Some("completed"), Some(11)));
    assert_eq!(
        server.metric("agenticai_ws_stream_appends_total{source=\"agent_update\"}").await,
        2.0,
        "applied once each"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&updates)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let left: u64 = attributes.attributes().unwrap().values().map(|count| count.parse::<u64>().unwrap_or(0)).sum();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} updates left on the queue");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An agent asks people through the queue, naming its request: a redelivery asks nothing new.
#[tokio::test]
async fn an_approval_asked_through_the_queue_twice_is_pending_once() {
    let endpoint = moto_endpoint();
    let sqs = aws_sdk_sqs::Client::new(&aws_config(&endpoint).await);
    let updates = create_queue(&sqs, "approval-updates", false).await;
    let server = TestServer::start(|config| {
        config.aws.aws_endpoint_url = Some(endpoint.clone());
        config.queues.sqs_queue_url_updates = Some(updates.clone());
    });
    let mut watcher = Client::connect(&server.ws_url("/ws?project_id=asked")).await;
    let body = json!({"project_id": "asked", "type": "approval_request", "approval_id": "ask-1", "agent": "ops",
                      "data": {"title": "Roll back?"}});
    for _ in 0..2 {
        sqs.send_message().queue_url(&updates).message_body(body.to_string()).send().await.unwrap();
    }
    let asked = watcher.recv_type("approval_requested").await;
    assert_eq!(
        (asked["approval_id"].as_str(), asked["options"].clone()),
        (Some("ask-1"), json!(["approve", "reject"]))
    );
    server.wait_for_metric("agenticai_ws_agent_updates_total{outcome=\"published\"}", 2.0).await;
    watcher.expect_silence(Duration::from_millis(200)).await;
    let pending = common::get_json(server.http_url("/api/v1/projects/asked/approvals")).await;
    assert_eq!(pending["approvals"].as_array().map(Vec::len), Some(1), "{pending}");
}
