//! Presence, through real sockets: `presence`, `presence_stats`, HTTP presence, and `join_leave`
//! events, in one process (memory engine) and across three server processes sharing one Redis
//! (Debian's redis-server): members of every task listed, joins and leaves seen on every task, a
//! task killed with SIGKILL losing its members after PRESENCE_TTL_SECS, and a Redis that lost its
//! data getting every member back; the three-task test runs on one node (`redis::`) and on a Redis
//! Cluster of six (`redis_cluster::`).

pub mod common;

use std::time::{Duration, Instant};

use common::{tokens, ChildServer, Client, RedisDeployment, TestServer};
use serde_json::{json, Value};

/// A token for `sub` allowed `projects`, with `info`.
fn token(sub: &str, projects: &[&str], info: Value) -> String {
    tokens::hs256(&tokens::claims(sub, projects, 600, json!({ "info": info })))
}

/// Connects with a token and subscribes to `project` (with join and leave events when asked).
async fn member(url: &str, token: &str, project: &str, join_leave: bool) -> Client {
    let mut client = Client::connect(&format!("{url}?token={token}")).await;
    let confirmed =
        client.request(json!({"action": "subscribe", "project_id": project, "join_leave": join_leave})).await;
    assert_eq!(confirmed["type"], "subscription_confirmed", "{confirmed}");
    client
}

/// The connection ids a presence answer lists, sorted.
fn listed(presence: &Value) -> Vec<String> {
    let mut ids: Vec<String> = presence["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|client| client["connection_id"].as_str().expect("connection_id").to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    ids.sort();
    ids
}

/// Asks `presence` until it lists exactly `expected` (errors count as not yet), within `within`.
/// Each answer is the next `presence` or `error` frame: a join or leave announced meanwhile is
/// skipped, not taken for the answer (which would leave that answer to pass, stale, for the next
/// request's).
async fn await_presence(client: &mut Client, project: &str, expected: &[String], within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        client.send(json!({"action": "presence", "project_id": project})).await;
        let answer = loop {
            let frame = client.recv().await;
            if frame["type"] == "presence" || frame["type"] == "error" {
                break frame;
            }
        };
        if answer["type"] == "presence" && listed(&answer) == expected {
            return answer;
        }
        assert!(Instant::now() < deadline, "presence never became {expected:?}; last answer {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn one_task_lists_members_with_their_info_and_announces_joins_and_leaves() {
    let server = TestServer::start(|config| config.access.jwt_secret = Some(tokens::SECRET.into()));
    let url = server.ws_url("/ws");
    let alice = token("alice", &["p"], json!({"name": "Alice"}));
    let mut watcher = member(&url, &alice, "p", true).await;

    let bob_token = token("bob", &["p"], json!({"kind": "agent"}));
    let mut bob = member(&url, &bob_token, "p", false).await;
    let join = watcher.recv().await;
    assert_eq!(join["type"], "join", "{join}");
    assert_eq!(join["project_id"], "p");
    assert_eq!(join["client"]["connection_id"], bob.connection_id);
    assert_eq!(join["client"]["user_id"], "bob");
    assert_eq!(join["client"]["info"], json!({"kind": "agent"}));
    assert!(join["client"]["connected_at"].as_str().is_some_and(|at| at.ends_with('Z')), "{join}");

    // Alice's second connection: one more client, not one more user.
    let alice_again = member(&url, &alice, "p", false).await;
    assert_eq!(watcher.recv().await["type"], "join");
    let presence = watcher.request(json!({"action": "presence", "project_id": "p", "request_id": 7})).await;
    assert_eq!(presence["type"], "presence", "{presence}");
    assert_eq!(presence["request_id"], 7);
    assert_eq!((presence["num_clients"].as_u64(), presence["num_users"].as_u64()), (Some(3), Some(2)));
    assert_eq!(presence["truncated"], false);
    assert_eq!(listed(&presence), sorted(&[&watcher.connection_id, &bob.connection_id, &alice_again.connection_id]));
    let alice_entry = presence["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|client| client["connection_id"] == watcher.connection_id.as_str())
        .unwrap();
    assert_eq!(alice_entry["info"], json!({"name": "Alice"}));
    let stats = watcher.request(json!({"action": "presence_stats", "project_id": "p"})).await;
    assert_eq!(stats, json!({"type": "presence_stats", "project_id": "p", "num_clients": 3, "num_users": 2}));

    // The same over HTTP, for whoever may subscribe to the project, and for no one else.
    let http = reqwest::Client::new();
    let answer =
        common::wire::send(http.get(server.http_url("/api/v1/projects/p/presence")).bearer_auth(&bob_token)).await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["num_clients"], 3);
    assert_eq!(listed(&answer), listed(&presence));
    let stats_only: Value =
        common::wire::send(http.get(server.http_url("/api/v1/projects/p/presence?stats=true")).bearer_auth(&bob_token))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(stats_only, json!({"project_id": "p", "num_clients": 3, "num_users": 2}));
    let outsider = token("eve", &["other"], Value::Null);
    let refused =
        common::wire::send(http.get(server.http_url("/api/v1/projects/p/presence")).bearer_auth(&outsider)).await;
    assert_eq!(refused.status(), 403);
    let mut eve = Client::connect(&format!("{url}?token={outsider}")).await;
    let refused = eve.request(json!({"action": "presence", "project_id": "p"})).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");

    // Unsubscribing and closing are both leaves.
    let left = bob.request(json!({"action": "unsubscribe", "project_id": "p"})).await;
    assert_eq!(left["type"], "unsubscription_confirmed");
    let leave = watcher.recv().await;
    assert_eq!(
        (leave["type"].as_str(), leave["client"]["connection_id"].as_str()),
        (Some("leave"), Some(&*bob.connection_id))
    );
    let alice_again_id = alice_again.connection_id.clone();
    drop(alice_again);
    let leave = watcher.recv().await;
    assert_eq!(
        (leave["type"].as_str(), leave["client"]["connection_id"].as_str()),
        (Some("leave"), Some(&*alice_again_id))
    );
    let stats = watcher.request(json!({"action": "presence_stats", "project_id": "p"})).await;
    assert_eq!((stats["num_clients"].as_u64(), stats["num_users"].as_u64()), (Some(1), Some(1)));
    assert_eq!(server.metric("agenticai_ws_presence_members").await, 1.0);
    assert_eq!(server.metric("agenticai_ws_presence_events_total{kind=\"leave\"}").await, 2.0);
}

#[tokio::test]
async fn with_presence_off_nothing_is_announced_and_reads_say_so() {
    let server = TestServer::start(|config| config.engine.presence = false);
    let url = server.ws_url("/ws");
    let mut watcher = Client::connect(&url).await;
    watcher.request(json!({"action": "subscribe", "project_id": "p", "join_leave": true})).await;
    let mut other = Client::connect(&url).await;
    other.request(json!({"action": "subscribe", "project_id": "p"})).await;
    watcher.expect_silence(Duration::from_millis(300)).await;
    let answer = watcher.request(json!({"action": "presence", "project_id": "p"})).await;
    assert_eq!(answer["code"], "unavailable", "{answer}");
    let bad = watcher.request(json!({"action": "subscribe", "project_id": "q", "join_leave": "yes"})).await;
    assert_eq!(bad["code"], "invalid_request", "{bad}");
}

/// Reads frames until a `join` or `leave` of `connection_id` arrives.
async fn await_event(client: &mut Client, kind: &str, connection_id: &str) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] == kind && frame["client"]["connection_id"] == connection_id {
            return frame;
        }
    }
}

on_redis_engines!(three_tasks_share_presence_lose_a_killed_task_and_refill_a_wiped_redis);

async fn three_tasks_share_presence_lose_a_killed_task_and_refill_a_wiped_redis(mut redis: RedisDeployment) {
    let mut env = redis.env();
    env.extend([("JWT_SECRET", tokens::SECRET.to_owned()), ("PRESENCE_TTL_SECS", "2".into())]);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(ChildServer::spawn(&env).await);
    }
    let alice = token("alice", &["team"], json!({"name": "Alice"}));
    let bob = token("bob", &["team"], Value::Null);
    let mut watcher = member(&tasks[0].ws_url("/ws"), &alice, "team", true).await;
    let on_second = member(&tasks[1].ws_url("/ws"), &bob, "team", false).await;
    let joined = await_event(&mut watcher, "join", &on_second.connection_id).await;
    assert_eq!(joined["client"]["user_id"], "bob");
    let on_third = member(&tasks[2].ws_url("/ws"), &bob, "team", true).await;
    await_event(&mut watcher, "join", &on_third.connection_id).await;

    // Presence on one task lists the members of all three.
    let everyone = sorted(&[&watcher.connection_id, &on_second.connection_id, &on_third.connection_id]);
    let presence = await_presence(&mut watcher, "team", &everyone, Duration::from_secs(2)).await;
    assert_eq!(presence["num_users"], 2);

    // A close on the second task is a leave on the first.
    let second_id = on_second.connection_id.clone();
    drop(on_second);
    await_event(&mut watcher, "leave", &second_id).await;

    // The third task killed outright: no leave, but its member is gone within the TTL.
    let killed_at = Instant::now();
    tasks[2].child.kill().unwrap();
    tasks[2].child.wait().unwrap();
    let remaining = sorted(&[&watcher.connection_id]);
    await_presence(&mut watcher, "team", &remaining, Duration::from_secs(5)).await;
    // Refreshed every TTL / 3: the last refresh was at most 0.67 s before the kill.
    assert!(killed_at.elapsed() >= Duration::from_secs(1), "gone by expiry, not at once");
    drop(on_third);

    // Redis restarted with its data lost: the tasks put their members back.
    let again = member(&tasks[1].ws_url("/ws"), &bob, "team", false).await;
    let complete = sorted(&[&watcher.connection_id, &again.connection_id]);
    await_presence(&mut watcher, "team", &complete, Duration::from_secs(3)).await;
    redis.kill();
    redis.restart();
    redis.command::<()>(&["FLUSHALL"]);
    await_presence(&mut watcher, "team", &complete, Duration::from_secs(5)).await;
    // Over HTTP on another task, once its own Redis connection is back.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = common::wire::send(
            reqwest::Client::new().get(tasks[1].http_url("/api/v1/projects/team/presence")).bearer_auth(&bob),
        )
        .await;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap();
        if status == 200 {
            assert_eq!(listed(&body), complete, "{body}");
            break;
        }
        assert_eq!(body["code"], "unavailable", "{body}");
        assert!(Instant::now() < deadline, "HTTP presence never answered: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A project of 1,500 members (written straight into Redis, as 1,500 tasks' writers would):
    // the answer lists 1,000 and says so; the counts are complete.
    let expiry = (tokens::now() + 600) * 1000;
    let mut members = vec!["HSET".to_owned(), "agenticai:{big}:presence".to_owned()];
    let mut expiries = vec!["ZADD".to_owned(), "agenticai:{big}:presence_expiry".to_owned()];
    for index in 0..1500 {
        members.push(format!("c{index}"));
        let member = json!({"connection_id": format!("c{index}"), "user_id": null, "connected_at": "2026-12-07T00:00:00.000000Z", "info": null});
        members.push(member.to_string());
        expiries.push(expiry.to_string());
        expiries.push(format!("c{index}"));
    }
    for command in [members, expiries] {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        assert_eq!(redis.command::<i64>(&args), 1500);
    }
    let big = token("carol", &["big"], Value::Null);
    let mut carol = Client::connect(&format!("{}?token={big}", tasks[0].ws_url("/ws"))).await;
    let presence = carol.request(json!({"action": "presence", "project_id": "big"})).await;
    assert_eq!((presence["num_clients"].as_u64(), presence["truncated"].as_bool()), (Some(1500), Some(true)));
    assert_eq!(presence["clients"].as_array().map(Vec::len), Some(1000));
    let stats = carol.request(json!({"action": "presence_stats", "project_id": "big"})).await;
    assert_eq!(stats["num_clients"], 1500);
}
