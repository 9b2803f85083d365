//! The engine's contract (`src/engine/mod.rs`), checked on both engines through a real server,
//! as Centrifuge checks each broker against one suite (`broker_memory_test.go`,
//! `broker_redis_test.go`): ordering per project, the resume seam (no gap, no duplicate),
//! presence, and the back end going down. Each test runs on each engine, as `memory::NAME` (no
//! REDIS_URL), `redis::NAME` (a private redis-server, Debian's, started here) and
//! `redis_cluster::NAME` (a private Redis Cluster of six). Then one
//! check only Redis can fail: closing a task's engine removes its members at once.

pub mod common;

use std::time::{Duration, Instant};

use agenticai_websocket::config::Config;
use common::{publish_numbered, tokens, Backend, Client, RedisServer, TestServer};
use serde_json::{json, Value};

on_both_engines!(
    concurrent_publications_reach_every_subscriber_once_in_offset_order,
    a_resume_meets_the_live_stream_without_gap_or_duplicate,
    presence_lists_every_member_and_announces_joins_and_leaves,
    the_back_end_going_down_leaves_this_tasks_subscribers_served,
);

async fn subscribe(client: &mut Client, request: Value) {
    let confirmed = client.request(request).await;
    assert_eq!(confirmed["type"], "subscription_confirmed", "{confirmed}");
}

/// Four publishers at once: the receipts hold offsets 1..=100 of one epoch, each subscriber
/// gets all of them in offset order and each once, each with the position its receipt named.
async fn concurrent_publications_reach_every_subscriber_once_in_offset_order(backend: Backend) {
    let server = backend.server(|_| {});
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(&server.ws_url("/ws")).await;
        subscribe(&mut client, json!({"action": "subscribe", "project_id": "ordered"})).await;
        subscribers.push(client);
    }
    let addr = server.addr;
    let publishers: Vec<_> = (0..4u64)
        .map(|publisher| {
            tokio::spawn(async move {
                let mut receipts = Vec::new();
                for n in (1..=25).map(|index| publisher * 25 + index) {
                    receipts.push((n, publish_numbered(addr, "ordered", n, 0).await));
                }
                receipts
            })
        })
        .collect();
    let mut offset_of = std::collections::HashMap::new();
    let mut epochs = std::collections::HashSet::new();
    for publisher in publishers {
        for (n, receipt) in publisher.await.expect("a publisher") {
            assert_eq!(receipt["subscribers"], 3, "{receipt}");
            epochs.insert(receipt["epoch"].as_str().expect("an epoch").to_owned());
            offset_of.insert(n, receipt["offset"].as_u64().expect("an offset"));
        }
    }
    assert_eq!(epochs.len(), 1, "one epoch: {epochs:?}");
    let mut offsets: Vec<u64> = offset_of.values().copied().collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=100).collect::<Vec<_>>(), "offsets grow by one per publication");
    for client in &mut subscribers {
        let mut received = Vec::new();
        for _ in 0..100 {
            let message = client.recv().await;
            assert_eq!(message["type"], "message", "{message}");
            let (n, offset) = (message["data"]["n"].as_u64().expect("n"), message["offset"].as_u64().expect("offset"));
            assert_eq!(offset_of[&n], offset, "delivered with the position its receipt named");
            received.push(offset);
        }
        assert_eq!(received, (1..=100).collect::<Vec<_>>(), "each once, in offset order");
        client.expect_silence(Duration::from_millis(100)).await;
    }
}

/// A client resumes from offset 0 of a backlog larger than its socket takes while more is
/// published, overflowing the hold of its queue of 64 messages many times
/// ([`common::resume_while_publishing`]): it gets every offset once, in order, and then nothing,
/// and is never closed for it.
async fn a_resume_meets_the_live_stream_without_gap_or_duplicate(backend: Backend) {
    let server = backend.server(|config| {
        config.engine.history_size = 5_000;
        // The replay is paced by the queue's bytes (half of 1 MiB: ~85 of the backlog's 6 KB
        // frames); 256 messages leave live frames room for a delivery burst after a stall of the
        // test's own machine (64 closed the client now and then in the instrumented suite).
        config.connection.outbound_queue_messages = std::num::NonZeroUsize::new(256).expect("not zero");
    });
    common::resume_while_publishing(server.addr, server.addr, "seam", 150, 600).await;
    assert_eq!(server.metric("agenticai_ws_slow_consumers_closed_total").await, 0.0);
}

/// The connection ids a presence answer lists, sorted.
fn listed(presence: &Value) -> Vec<String> {
    let clients = presence["clients"].as_array().expect("clients");
    let mut ids: Vec<String> =
        clients.iter().map(|client| client["connection_id"].as_str().expect("connection_id").to_owned()).collect();
    ids.sort();
    ids
}

/// Asks `presence` until it lists exactly `expected` (with Redis, the presence writer writes a
/// moment later).
async fn await_presence(client: &mut Client, project: &str, mut expected: Vec<String>) {
    expected.sort();
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        let answer = client.request(json!({"action": "presence", "project_id": project})).await;
        if answer["type"] == "presence" && listed(&answer) == expected {
            return;
        }
        assert!(Instant::now() < deadline, "presence never became {expected:?}; last answer {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn member(server: &TestServer, user: &str, join_leave: bool) -> Client {
    let token = tokens::hs256(&tokens::claims(user, &["room"], 600, json!({})));
    let mut client = Client::connect(&server.ws_url(&format!("/ws?token={token}"))).await;
    subscribe(&mut client, json!({"action": "subscribe", "project_id": "room", "join_leave": join_leave})).await;
    client
}

/// Every member is listed; a join and a leave are announced once to whoever asked, not to the
/// member itself, and not to whoever did not ask.
async fn presence_lists_every_member_and_announces_joins_and_leaves(backend: Backend) {
    let server = backend.server(|config| config.access.jwt_secret = Some(tokens::SECRET.into()));
    let mut watcher = member(&server, "alice", true).await;
    // Without join and leave events: with Redis, Alice's own join may arrive after Bob's
    // confirmation (her task's presence writer announces it a moment later).
    let mut bob = member(&server, "bob", false).await;
    let join = watcher.recv().await;
    assert_eq!(
        (join["type"].as_str(), join["client"]["connection_id"].as_str()),
        (Some("join"), Some(&*bob.connection_id))
    );
    let expected = vec![watcher.connection_id.clone(), bob.connection_id.clone()];
    await_presence(&mut watcher, "room", expected).await;
    let left = bob.request(json!({"action": "unsubscribe", "project_id": "room"})).await;
    assert_eq!(left["type"], "unsubscription_confirmed", "{left}");
    let leave = watcher.recv().await;
    assert_eq!(
        (leave["type"].as_str(), leave["client"]["connection_id"].as_str()),
        (Some("leave"), Some(&*bob.connection_id))
    );
    let expected = vec![watcher.connection_id.clone()];
    await_presence(&mut watcher, "room", expected).await;
    watcher.expect_silence(Duration::from_millis(100)).await;
    bob.expect_silence(Duration::from_millis(100)).await;
}

/// `/ready` until it answers `status`; its body.
async fn await_ready_status(server: &TestServer, status: u16) -> Value {
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        let response = reqwest::get(server.http_url("/ready")).await.expect("GET /ready");
        if response.status() == status {
            return response.json().await.expect("a JSON body");
        }
        assert!(Instant::now() < deadline, "/ready never answered {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The engine's health is what `/ready` reports. The memory engine has no back end to lose.
/// With Redis gone, a publication still reaches this task's subscribers, without a position,
/// and its publisher is told `unavailable`; subscribes are answered at once; once Redis is back,
/// publications have positions again.
async fn the_back_end_going_down_leaves_this_tasks_subscribers_served(backend: Backend) {
    let server = backend.server(|_| {});
    let mut subscriber = Client::connect(&server.ws_url("/ws")).await;
    subscribe(&mut subscriber, json!({"action": "subscribe", "project_id": "served"})).await;
    let mut redis = match backend {
        Backend::Memory => {
            assert_eq!(await_ready_status(&server, 200).await, json!({"status": "ready", "redis": null}));
            let receipt = publish_numbered(server.addr, "served", 1, 0).await;
            assert_eq!((receipt["offset"].as_u64(), receipt["subscribers"].as_u64()), (Some(1), Some(1)));
            assert_eq!(subscriber.recv().await["offset"], 1);
            return;
        }
        Backend::Redis(redis) => redis,
    };
    assert_eq!(await_ready_status(&server, 200).await, json!({"status": "ready", "redis": "up"}));
    redis.kill();
    assert_eq!(await_ready_status(&server, 503).await, json!({"status": "redis_down", "redis": "down"}));
    let refused = server.publish(json!({"project_id": "served", "data": {"n": 1}})).await;
    assert_eq!(refused.status(), 503);
    let refused: Value = refused.json().await.expect("an error body");
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert!(refused["message"].as_str().is_some_and(|message| message.contains("1 local subscribers")), "{refused}");
    let message = subscriber.recv().await;
    assert_eq!(message["data"]["n"], 1);
    assert!(message.get("offset").is_none(), "no position without the back end: {message}");
    let started = Instant::now();
    let mut late = Client::connect(&server.ws_url("/ws")).await;
    subscribe(&mut late, json!({"action": "subscribe", "project_id": "served", "recover": true})).await;
    assert!(started.elapsed() < Duration::from_millis(500), "answered at once: {:?}", started.elapsed());
    redis.restart();
    assert_eq!(await_ready_status(&server, 200).await, json!({"status": "ready", "redis": "up"}));
    let receipt = publish_numbered(server.addr, "served", 2, 0).await;
    assert_eq!(receipt["subscribers"], 2, "{receipt}");
    for client in [&mut subscriber, &mut late] {
        let message = client.recv().await;
        assert_eq!((message["data"]["n"].as_u64(), message["offset"].as_u64()), (Some(2), receipt["offset"].as_u64()));
    }
}

/// A task that drains closes its engine: what its presence writer could not write (a leave
/// made while Redis was gone) is written then, announced to the other tasks, rather than left to
/// expire after PRESENCE_TTL_SECS (an hour here; its next refresh is 20 minutes away).
#[tokio::test]
async fn a_closed_task_writes_its_last_leaves_at_once() {
    let mut redis = RedisServer::start();
    let configure = |config: &mut Config| {
        config.engine.redis_url = Some(redis.url());
        config.access.jwt_secret = Some(tokens::SECRET.into());
        config.engine.presence_ttl = Duration::from_secs(3600);
        config.server.drain_window = Duration::from_millis(100);
    };
    let staying = TestServer::start(configure);
    let leaving = TestServer::start(configure);
    let mut watcher = member(&staying, "alice", true).await;
    let bob = member(&leaving, "bob", false).await;
    let join = watcher.recv().await;
    assert_eq!(
        (join["type"].as_str(), join["client"]["connection_id"].as_str()),
        (Some("join"), Some(&*bob.connection_id))
    );
    let expected = vec![watcher.connection_id.clone(), bob.connection_id.clone()];
    await_presence(&mut watcher, "room", expected).await;

    redis.kill();
    await_ready_status(&leaving, 503).await;
    let bob_id = bob.connection_id.clone();
    drop(bob);
    leaving.wait_for_metric("agenticai_ws_presence_members", 0.0).await;
    // The writer tried, and failed, to write the leave.
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    await_ready_status(&staying, 200).await;
    await_ready_status(&leaving, 200).await;
    let expected = vec![watcher.connection_id.clone(), bob_id.clone()];
    await_presence(&mut watcher, "room", expected).await;

    // The drain blocks: not on this runtime.
    tokio::task::spawn_blocking(move || drop(leaving)).await.expect("the drain");
    let leave = watcher.recv_type("leave").await;
    assert_eq!(leave["client"]["connection_id"], bob_id.as_str());
    let expected = vec![watcher.connection_id.clone()];
    await_presence(&mut watcher, "room", expected).await;
}
