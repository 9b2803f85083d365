//! Stopping an agent (issue 26, cancel): through the binary's WebSocket and a real queue (moto).
//! A cancel reaches the stream's agent queue once, however often it is asked; viewers see
//! `stream_cancel_requested` then `stream_ended` `cancelled`, whether the agent ends the stream
//! or the gateway does after STREAM_CANCEL_GRACE_SECS; a stream without an agent ends at once.

pub mod common;

use std::time::{Duration, Instant};

use common::{aws_config, create_queue, drain_queue, moto_endpoint, Backend, Client, TestServer};
use serde_json::{json, Value};

on_redis_engines!(a_decision_whose_task_died_before_the_queue_had_it_reaches_the_queue_from_another_task);
/// Named `expiry::{memory,redis,redis_cluster}::...`, beside the Redis-only suite's modules.
mod expiry {
    use super::an_unanswered_request_expires_and_the_agent_is_told;
    crate::on_both_engines!(an_unanswered_request_expires_and_the_agent_is_told);
}

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

/// Servers over one Redis (or, without it, one server) whose agent queues are fresh moto queues
/// shared by all of them; the ops queue's URL.
struct Platform {
    sqs: aws_sdk_sqs::Client,
    ops: String,
    servers: Vec<TestServer>,
    _backend: Backend,
}

impl Platform {
    /// One task on the memory engine, or several over one Redis.
    async fn start(tasks: usize) -> Self {
        Self::on(tasks, if tasks > 1 { Backend::redis() } else { Backend::Memory }).await
    }

    async fn on(tasks: usize, backend: Backend) -> Self {
        let endpoint = moto_endpoint();
        let sqs = aws_sdk_sqs::Client::new(&aws_config(&endpoint).await);
        let mut queues = Vec::new();
        for role in ["pm", "dev", "qa", "ops"] {
            queues.push(create_queue(&sqs, role, false).await);
        }
        let servers = (0..tasks)
            .map(|_| {
                let (endpoint, queues) = (endpoint.clone(), queues.clone());
                backend.server(move |config| {
                    config.aws.aws_endpoint_url = Some(endpoint);
                    let [pm, dev, qa, ops] = <[String; 4]>::try_from(queues).expect("four queues");
                    (config.queues.sqs_queue_url_pm, config.queues.sqs_queue_url_dev) = (Some(pm), Some(dev));
                    (config.queues.sqs_queue_url_qa, config.queues.sqs_queue_url_ops) = (Some(qa), Some(ops));
                })
            })
            .collect();
        Platform { sqs, ops: queues[3].clone(), servers, _backend: backend }
    }
}

async fn ask(agent: &mut Client, expires_in_secs: u64) -> String {
    let requested = agent
        .request(json!({"action": "approval_request", "project_id": "ctl", "agent": "ops",
                        "data": {"title": "Deploy build 142 to prod?"}, "options": ["approve", "reject"],
                        "expires_in_secs": expires_in_secs, "request_id": "q"}))
        .await;
    assert_eq!(requested["type"], "approval_requested", "{requested}");
    requested["approval_id"].as_str().expect("an approval id").to_owned()
}

#[tokio::test]
async fn ten_people_on_two_tasks_deciding_at_once_make_one_winner_and_one_queue_message() {
    let platform = Platform::start(2).await;
    let mut viewers = vec![watcher(&platform.servers[0]).await, watcher(&platform.servers[1]).await];
    let mut agent = Client::connect(&platform.servers[0].ws_url("/ws")).await;
    let approval_id = ask(&mut agent, 3600).await;
    for viewer in &mut viewers {
        let requested = viewer.recv_type("approval_requested").await;
        assert_eq!(requested["data"]["title"], "Deploy build 142 to prod?");
        assert_eq!(requested["options"], json!(["approve", "reject"]));
    }
    let mut people = Vec::new();
    for n in 0..10 {
        people.push(Client::connect(&platform.servers[n % 2].ws_url("/ws")).await);
    }
    let decisions = people.into_iter().enumerate().map(|(n, mut person)| {
        let approval_id = approval_id.clone();
        tokio::spawn(async move {
            let decision = if n % 2 == 0 { "approve" } else { "reject" };
            person
                .request(json!({"action": "approval_decide", "project_id": "ctl", "approval_id": approval_id,
                                "decision": decision, "request_id": n}))
                .await
        })
    });
    let answers: Vec<Value> =
        futures_util::future::join_all(decisions).await.into_iter().map(|answer| answer.expect("a person")).collect();
    let winners: Vec<&Value> = answers.iter().filter(|answer| answer["type"] == "approval_decided").collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let winning = winners[0]["decision"].as_str().expect("a decision");
    for loser in answers.iter().filter(|answer| answer["type"] != "approval_decided") {
        assert_eq!(
            (loser["code"].as_str(), loser["decision"].as_str()),
            (Some("already_decided"), Some(winning)),
            "{loser}"
        );
    }
    let messages = drain_queue(&platform.sqs, &platform.ops, 1).await;
    assert_eq!(messages.len(), 1);
    let body: Value = serde_json::from_str(messages[0].body().expect("body")).expect("JSON");
    assert_eq!(
        (body["kind"].as_str(), body["approval_id"].as_str(), body["decision"].as_str()),
        (Some("approval_decision"), Some(&*approval_id), Some(winning))
    );
    assert_eq!(
        winners[0]["message_id"],
        messages[0]
            .message_attributes()
            .and_then(|a| a.get("MessageId"))
            .and_then(|m| m.string_value())
            .map(Value::from)
            .unwrap_or_default()
    );
    for viewer in &mut viewers {
        let resolved = viewer.recv_type("approval_resolved").await;
        assert_eq!(
            (resolved["approval_id"].as_str(), resolved["decision"].as_str()),
            (Some(&*approval_id), Some(winning))
        );
    }
    let more =
        platform.sqs.receive_message().queue_url(&platform.ops).wait_time_seconds(2).send().await.expect("receive");
    assert!(more.messages().is_empty(), "one queue message: {:?}", more.messages());
}

#[tokio::test]
async fn a_viewer_that_reconnects_sees_a_pending_approval_again_and_once_decided_never() {
    let platform = Platform::start(1).await;
    let server = &platform.servers[0];
    let mut agent = Client::connect(&server.ws_url("/ws")).await;
    let approval_id = ask(&mut agent, 3600).await;
    for _ in 0..2 {
        let mut viewer = Client::connect(&server.ws_url("/ws")).await;
        assert_eq!(
            viewer.request(json!({"action": "subscribe", "project_id": "ctl"})).await["type"],
            "subscription_confirmed"
        );
        let pending = viewer.recv().await;
        assert_eq!(
            (pending["type"].as_str(), pending["approval_id"].as_str()),
            (Some("approval_requested"), Some(&*approval_id))
        );
    }
    let listed = common::get_json(server.http_url("/api/v1/projects/ctl/approvals")).await;
    assert_eq!(listed["approvals"][0]["approval_id"].as_str(), Some(&*approval_id), "{listed}");
    let decided = common::wire::send(
        reqwest::Client::new()
            .post(server.http_url(&format!("/api/v1/projects/ctl/approvals/{approval_id}/decide")))
            .json(&json!({"decision": "reject", "comment": "not on a Friday"})),
    )
    .await;
    assert_eq!(decided.status(), 200);
    let again = common::wire::send(
        reqwest::Client::new()
            .post(server.http_url(&format!("/api/v1/projects/ctl/approvals/{approval_id}/decide")))
            .json(&json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(again.status(), 409);
    assert_eq!(again.json::<Value>().await.expect("JSON")["decision"], "reject");
    let mut viewer = Client::connect(&server.ws_url("/ws")).await;
    assert_eq!(
        viewer.request(json!({"action": "subscribe", "project_id": "ctl"})).await["type"],
        "subscription_confirmed"
    );
    viewer.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(common::get_json(server.http_url("/api/v1/projects/ctl/approvals")).await["approvals"], json!([]));
    let unknown = agent
        .request(
            json!({"action": "approval_decide", "project_id": "ctl", "approval_id": "nope", "decision": "approve"}),
        )
        .await;
    assert_eq!(unknown["code"], "not_found");
    let message = drain_queue(&platform.sqs, &platform.ops, 1).await;
    let body: Value = serde_json::from_str(message[0].body().expect("body")).expect("JSON");
    assert_eq!((body["decision"].as_str(), body["comment"].as_str()), (Some("reject"), Some("not on a Friday")));
    // Recorded like forwards: who asked, who decided what, when.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = common::get_json(server.http_url("/api/v1/projects/ctl/messages")).await;
        let approvals: Vec<&Value> =
            audit["items"].as_array().expect("items").iter().filter(|item| item["kind"] == "approval").collect();
        let decided = approvals.iter().find(|item| item["event"] == "decided");
        if let (2, Some(decided)) = (approvals.len(), decided) {
            assert_eq!(
                (decided["decision"].as_str(), decided["approval_id"].as_str()),
                (Some("reject"), Some(&*approval_id))
            );
            assert!(approvals.iter().any(|item| item["event"] == "requested" && item["agent"] == "ops"));
            break;
        }
        assert!(Instant::now() < deadline, "approval records: {audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// On every engine: on a Redis Cluster the pending questions by expiry are kept per project.
async fn an_unanswered_request_expires_and_the_agent_is_told(backend: Backend) {
    let platform = Platform::on(1, backend).await;
    let server = &platform.servers[0];
    let mut viewer = watcher(server).await;
    let mut agent = Client::connect(&server.ws_url("/ws")).await;
    let approval_id = ask(&mut agent, 1).await;
    let resolved = viewer.recv_type("approval_resolved").await;
    assert_eq!(
        (resolved["approval_id"].as_str(), resolved["decision"].as_str()),
        (Some(&*approval_id), Some("expired"))
    );
    let message = drain_queue(&platform.sqs, &platform.ops, 1).await;
    let body: Value = serde_json::from_str(message[0].body().expect("body")).expect("JSON");
    assert_eq!((body["approval_id"].as_str(), body["decision"].as_str()), (Some(&*approval_id), Some("expired")));
    let late = agent
        .request(json!({"action": "approval_decide", "project_id": "ctl", "approval_id": approval_id, "decision": "approve"}))
        .await;
    assert_eq!(late["code"].as_str(), Some("not_found"), "an expired request is not found: {late}");
}

/// A decision taken on a task whose queue is unreachable, that task then killed with SIGKILL: the
/// decision was recorded before it was sent, so the other task re-sends it once its sender's
/// lease (FORWARD_DEADLINE_SECS and 5 s) is over; the agent gets it once, the winner's. On one
/// Redis and on a Redis Cluster (where the undelivered decisions are kept per project).
async fn a_decision_whose_task_died_before_the_queue_had_it_reaches_the_queue_from_another_task(
    redis: common::RedisDeployment,
) {
    let endpoint = moto_endpoint();
    let sqs = aws_sdk_sqs::Client::new(&aws_config(&endpoint).await);
    let mut queues = Vec::new();
    for role in ["pm", "dev", "qa", "ops"] {
        queues.push(create_queue(&sqs, role, false).await);
    }
    let black_hole = common::OutageProxy::start(&endpoint).await;
    let environment = |endpoint: &str| {
        let mut env = redis.env();
        env.extend([("AWS_ENDPOINT_URL", endpoint.to_owned()), ("FORWARD_DEADLINE_SECS", "2".to_owned())]);
        for (name, url) in
            ["SQS_QUEUE_URL_PM", "SQS_QUEUE_URL_DEV", "SQS_QUEUE_URL_QA", "SQS_QUEUE_URL_OPS"].into_iter().zip(&queues)
        {
            env.push((name, url.clone()));
        }
        env
    };
    let mut doomed = common::ChildServer::spawn(&environment(&black_hole.endpoint)).await;
    let survivor = common::ChildServer::spawn(&environment(&endpoint)).await;
    let mut viewer = Client::connect(&survivor.ws_url("/ws")).await;
    assert_eq!(
        viewer.request(json!({"action": "subscribe", "project_id": "ctl"})).await["type"],
        "subscription_confirmed"
    );
    let mut agent = Client::connect(&survivor.ws_url("/ws")).await;
    let approval_id = ask(&mut agent, 3600).await;
    black_hole.set_down(true);
    let mut person = Client::connect(&doomed.ws_url("/ws")).await;
    person
        .send(json!({"action": "approval_decide", "project_id": "ctl", "approval_id": approval_id, "decision": "approve"}))
        .await;
    let resolved = viewer.recv_type("approval_resolved").await;
    assert_eq!(resolved["decision"], "approve", "recorded and announced before it is sent");
    let killed_at = Instant::now();
    doomed.child.kill().expect("SIGKILL");
    let _ = doomed.child.wait();
    let messages = drain_queue(&sqs, &queues[3], 1).await;
    assert_eq!(messages.len(), 1, "the decision reached the queue from the other task");
    let body: Value = serde_json::from_str(messages[0].body().expect("body")).expect("JSON");
    assert_eq!((body["approval_id"].as_str(), body["decision"].as_str()), (Some(&*approval_id), Some("approve")));
    assert!(killed_at.elapsed() < Duration::from_secs(20), "within the lease and a sweep: {:?}", killed_at.elapsed());
    let more = sqs.receive_message().queue_url(&queues[3]).wait_time_seconds(2).send().await.expect("receive");
    assert!(more.messages().is_empty(), "sent once: {:?}", more.messages());
}
