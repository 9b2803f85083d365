//! Stopping an agent (issue 26, cancel): through the binary's WebSocket and a real queue (moto).
//! A cancel reaches the stream's agent queue once, however often it is asked; viewers see
//! `stream_cancel_requested` then `stream_ended` `cancelled`, whether the agent ends the stream
//! or the gateway does after STREAM_CANCEL_GRACE_SECS; a stream without an agent ends at once.

pub mod common;

use std::time::{Duration, Instant};

use common::{aws_config, create_queue, drain_queue, moto_endpoint, Client, TestServer};
use serde_json::{json, Value};

/// A server whose dev queue is a fresh moto queue; the queue's URL and a client for it.
async fn server_with_dev_queue(grace: Duration) -> (TestServer, aws_sdk_sqs::Client, String) {
    let endpoint = moto_endpoint();
    let sqs = aws_sdk_sqs::Client::new(&aws_config(&endpoint).await);
    let dev = create_queue(&sqs, "dev-cancel", false).await;
    let mut others = Vec::new();
    for role in ["pm", "qa", "ops"] {
        others.push(create_queue(&sqs, role, false).await);
    }
    let server = TestServer::start({
        let dev = dev.clone();
        move |config| {
            config.aws.aws_endpoint_url = Some(endpoint);
            config.queues.sqs_queue_url_dev = Some(dev);
            let [pm, qa, ops] = <[String; 3]>::try_from(others).expect("three queues");
            (config.queues.sqs_queue_url_pm, config.queues.sqs_queue_url_qa, config.queues.sqs_queue_url_ops) =
                (Some(pm), Some(qa), Some(ops));
            config.streams.stream_cancel_grace = grace;
        }
    });
    (server, sqs, dev)
}

async fn start_stream(agent: &mut Client, agent_role: Option<&str>) -> String {
    let started = agent
        .request(json!({"action": "stream_start", "project_id": "ctl", "agent": agent_role, "request_id": "s"}))
        .await;
    assert_eq!(started["type"], "stream_started", "{started}");
    started["stream_id"].as_str().expect("stream id").to_owned()
}

async fn watcher(server: &TestServer) -> Client {
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let confirmed = client.request(json!({"action": "subscribe", "project_id": "ctl"})).await;
    assert_eq!(confirmed["type"], "subscription_confirmed");
    client
}

fn cancel(stream_id: &str, request_id: &str) -> Value {
    json!({"action": "cancel", "project_id": "ctl", "stream_id": stream_id, "reason": "wrong branch",
           "request_id": request_id})
}

#[tokio::test]
async fn a_cancel_reaches_the_agent_queue_once_and_viewers_see_the_stream_end_cancelled() {
    let (server, sqs, dev) = server_with_dev_queue(Duration::from_secs(30)).await;
    let mut viewer = watcher(&server).await;
    let mut agent = Client::connect(&server.ws_url("/ws")).await;
    let stream_id = start_stream(&mut agent, Some("dev")).await;
    agent
        .send(json!({"action": "stream_append", "project_id": "ctl", "stream_id": stream_id, "text": "working"}))
        .await;
    let mut person = Client::connect(&server.ws_url("/ws")).await;
    let first = person.request(cancel(&stream_id, "c1")).await;
    assert_eq!(
        (first["type"].as_str(), first["request_id"].as_str()),
        (Some("cancel_requested"), Some("c1")),
        "{first}"
    );
    let message_id = first["message_id"].as_str().expect("the queue message's id").to_owned();
    let second = person.request(cancel(&stream_id, "c2")).await;
    assert_eq!(second["message_id"].as_str(), Some(&*message_id), "a second cancel is the first one: {second}");
    let messages = drain_queue(&sqs, &dev, 1).await;
    assert_eq!(messages.len(), 1);
    let body: Value = serde_json::from_str(messages[0].body().expect("body")).expect("JSON body");
    assert_eq!(
        (body["kind"].as_str(), body["project_id"].as_str(), body["stream_id"].as_str(), body["reason"].as_str()),
        (Some("cancel"), Some("ctl"), Some(&*stream_id), Some("wrong branch"))
    );
    assert!(body["requested_at"].is_string(), "{body}");
    let kind = messages[0]
        .message_attributes()
        .and_then(|attributes| attributes.get("Kind"))
        .and_then(|kind| kind.string_value());
    assert_eq!(kind, Some("cancel"));
    let announced = viewer.recv_type("stream_cancel_requested").await;
    assert_eq!(announced["stream_id"].as_str(), Some(&*stream_id));
    agent
        .request(json!({"action": "stream_end", "project_id": "ctl", "stream_id": stream_id, "status": "cancelled"}))
        .await;
    let ended = viewer.recv_type("stream_ended").await;
    assert_eq!((ended["status"].as_str(), ended["length"].as_u64()), (Some("cancelled"), Some(7)));
    let more = sqs.receive_message().queue_url(&dev).wait_time_seconds(1).send().await.expect("receive");
    assert!(more.messages().is_empty(), "nothing more reached the queue: {:?}", more.messages());
}

#[tokio::test]
async fn an_agent_that_does_not_stop_is_ended_cancelled_after_the_grace_and_one_without_an_agent_at_once() {
    let (server, _sqs, _dev) = server_with_dev_queue(Duration::from_secs(1)).await;
    let mut viewer = watcher(&server).await;
    let mut agent = Client::connect(&server.ws_url("/ws")).await;
    let stubborn = start_stream(&mut agent, Some("dev")).await;
    let mut person = Client::connect(&server.ws_url("/ws")).await;
    let asked = Instant::now();
    assert_eq!(person.request(cancel(&stubborn, "c1")).await["type"], "cancel_requested");
    let ended = viewer.recv_type("stream_ended").await;
    assert_eq!((ended["stream_id"].as_str(), ended["status"].as_str()), (Some(&*stubborn), Some("cancelled")));
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(4), "after the grace: {waited:?}");
    let agentless = start_stream(&mut agent, None).await;
    let answer = person.request(cancel(&agentless, "c2")).await;
    assert_eq!(answer["type"], "cancel_requested", "{answer}");
    assert!(answer.get("message_id").is_none(), "nobody to tell: {answer}");
    let ended = viewer.recv_type("stream_ended").await;
    assert_eq!((ended["stream_id"].as_str(), ended["status"].as_str()), (Some(&*agentless), Some("cancelled")));
    let late = person.request(cancel(&agentless, "c3")).await;
    assert_eq!((late["code"].as_str(), late["status"].as_str()), (Some("stream_ended"), Some("cancelled")));
}
