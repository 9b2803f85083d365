//! Several server processes over one Redis (Debian's redis-server, started here): cross-task
//! fan-out exactly once and in order, Redis restarts, a lost pub/sub connection, and resume
//! across tasks. Each test runs on one node (`redis::NAME`) and on a Redis Cluster of six
//! (`redis_cluster::NAME`, REDIS_CLUSTER=true).

pub mod common;

use std::{collections::HashMap, time::Duration};

use common::{ChildServer, Client, RedisCluster, RedisDeployment, RedisServer, RequestHoldingProxy};
use serde_json::{json, Value};

on_redis_engines!(
    every_subscriber_on_every_task_gets_every_message_once_in_order,
    a_redis_restart_loses_nothing_confirmed,
    a_dropped_pubsub_connection_is_gap_filled_from_history,
    a_client_resumes_on_another_task_with_nothing_missing_or_doubled,
    in_process_tasks_share_fan_out_history_and_resume,
    with_redis_gone_subscribes_are_answered_at_once_and_ready_says_why,
    a_long_resume_on_another_task_is_fed_at_the_clients_pace_without_gap_or_duplicate,
    the_redis_history_keeps_at_most_history_max_bytes_per_project_and_is_read_in_pages,
);

async fn three_tasks(redis: &RedisDeployment) -> Vec<ChildServer> {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(ChildServer::spawn(&redis.env()).await);
    }
    servers
}

/// Reads `count` messages; returns their (offset, epoch, seq).
async fn read_messages(client: &mut Client, count: usize) -> Vec<(u64, String, u64)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let message = client.recv().await;
        if message["type"] != "message" {
            continue;
        }
        seen.push((
            message["offset"].as_u64().unwrap(),
            message["epoch"].as_str().unwrap().to_owned(),
            message["data"]["seq"].as_u64().unwrap(),
        ));
    }
    seen
}

async fn every_subscriber_on_every_task_gets_every_message_once_in_order(redis: RedisDeployment) {
    let servers = three_tasks(&redis).await;
    let projects = ["north", "south"];
    let mut subscribers = Vec::new();
    for index in 0..12 {
        let server = &servers[index % servers.len()];
        let project = projects[index % projects.len()];
        let mut client = Client::connect(&server.ws_url("/ws")).await;
        let confirmed = client.request(json!({"action": "subscribe", "project_id": project})).await;
        assert_eq!(confirmed["type"], "subscription_confirmed");
        subscribers.push((project, client));
    }
    let per_project = 30;
    for seq in 0..per_project {
        for project in projects {
            let publisher = &servers[(seq as usize) % servers.len()];
            let response = publisher.publish(json!({"project_id": project, "data": {"seq": seq}})).await;
            assert_eq!(response.status(), 200, "{:?}", response.text().await);
        }
    }
    for (_, client) in &mut subscribers {
        let seen = read_messages(client, per_project as usize).await;
        let seqs: Vec<u64> = seen.iter().map(|(_, _, seq)| *seq).collect();
        assert_eq!(seqs, (0..per_project).collect::<Vec<_>>(), "each message once, in publish order");
        let offsets: Vec<u64> = seen.iter().map(|(offset, _, _)| *offset).collect();
        assert_eq!(offsets, (1..=per_project).collect::<Vec<_>>());
        client.expect_silence(Duration::from_millis(100)).await;
    }
}

async fn a_redis_restart_loses_nothing_confirmed(mut redis: RedisDeployment) {
    let servers = three_tasks(&redis).await;
    let mut subscribers = Vec::new();
    for server in &servers {
        let mut client = Client::connect(&server.ws_url("/ws?project_id=r")).await;
        client.request(json!({"action": "ping"})).await;
        subscribers.push(client);
    }
    let mut confirmed: Vec<u64> = Vec::new();
    let mut refused = 0;
    for seq in 0..60u64 {
        if seq == 20 {
            redis.kill();
        }
        if seq == 35 {
            redis.restart();
            for server in &servers {
                server.wait_ready().await;
            }
        }
        let publisher = &servers[(seq as usize) % servers.len()];
        let response = publisher.publish(json!({"project_id": "r", "data": {"seq": seq}})).await;
        match response.status().as_u16() {
            200 => confirmed.push(seq),
            503 => {
                let error: Value = response.json().await.unwrap();
                assert_eq!(error["code"], "unavailable");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused > 0, "the outage refused nothing");
    assert_eq!(confirmed.len() + refused, 60);
    for (index, client) in subscribers.iter_mut().enumerate() {
        // Refused publications reached at most their own task's subscribers, without an offset.
        let mut received = Vec::new();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(3), client.recv()).await;
            let Ok(message) = message else { break };
            if message["type"] == "message" && message.get("offset").is_some() {
                received.push(message["data"]["seq"].as_u64().unwrap());
            }
        }
        assert_eq!(received, confirmed, "subscriber {index} lost or repeated a confirmed publication");
    }
    let text = reqwest::get(servers[0].http_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(common::metric_value(&text, "agenticai_ws_redis_reconnects_total") >= 1.0);
    assert_eq!(common::metric_value(&text, "agenticai_ws_redis_connected"), 1.0);
    // Every publication is in its task's audit, the refused ones (delivered locally) without an offset.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut audited = Vec::new();
        for server in &servers {
            let page = common::get_json(server.http_url("/api/v1/projects/r/messages?limit=100")).await;
            audited
                .extend(page["items"].as_array().unwrap().iter().filter(|item| item["kind"] == "publication").cloned());
        }
        if audited.len() == 60 {
            let without_offset = audited.iter().filter(|item| item.get("offset").is_none_or(Value::is_null)).count();
            assert_eq!(without_offset, refused, "the refused publications are audited without an offset");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{} of 60 publications audited", audited.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_dropped_pubsub_connection_is_gap_filled_from_history(redis: RedisDeployment) {
    let servers = three_tasks(&redis).await;
    let mut watcher = Client::connect(&servers[1].ws_url("/ws")).await;
    watcher.request(json!({"action": "subscribe", "project_id": "g"})).await;
    for seq in 0..40u64 {
        if seq % 10 == 5 {
            redis.kill_pubsub_connections();
        }
        let response = servers[0].publish(json!({"project_id": "g", "data": {"seq": seq}})).await;
        assert_eq!(response.status(), 200);
    }
    let seen = read_messages(&mut watcher, 40).await;
    let seqs: Vec<u64> = seen.iter().map(|(_, _, seq)| *seq).collect();
    assert_eq!(seqs, (0..40).collect::<Vec<_>>());
    watcher.expect_silence(Duration::from_millis(300)).await;
}

async fn a_client_resumes_on_another_task_with_nothing_missing_or_doubled(redis: RedisDeployment) {
    let servers = three_tasks(&redis).await;
    let mut client = Client::connect(&servers[0].ws_url("/ws")).await;
    let confirmed = client.request(json!({"action": "subscribe", "project_id": "m", "recover": true})).await;
    let epoch = confirmed["epoch"].as_str().unwrap().to_owned();
    for seq in 0..3 {
        servers[1].publish(json!({"project_id": "m", "data": {"seq": seq}})).await;
    }
    let first = read_messages(&mut client, 3).await;
    let last_offset = first.last().unwrap().0;
    drop(client);
    for seq in 3..10 {
        servers[1].publish(json!({"project_id": "m", "data": {"seq": seq}})).await;
    }
    let mut back = Client::connect(&servers[2].ws_url("/ws")).await;
    back.send(json!({"action": "subscribe", "project_id": "m", "since": {"offset": last_offset, "epoch": epoch}}))
        .await;
    let resumed = back.recv().await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    // Publish while the replay is being read and delivered: the seam must hold.
    let publisher = tokio::spawn({
        let url = servers[1].http_url("/api/v1/publish");
        async move {
            for seq in 10..20 {
                reqwest::Client::new()
                    .post(&url)
                    .json(&json!({"project_id": "m", "data": {"seq": seq}}))
                    .send()
                    .await
                    .unwrap();
            }
        }
    });
    let rest = read_messages(&mut back, 17).await;
    publisher.await.unwrap();
    let seqs: Vec<u64> = rest.iter().map(|(_, _, seq)| *seq).collect();
    assert_eq!(seqs, (3..20).collect::<Vec<_>>());
    back.expect_silence(Duration::from_millis(200)).await;
    let mut by_offset = HashMap::new();
    for (offset, _, seq) in first.iter().chain(rest.iter()) {
        assert!(by_offset.insert(*offset, *seq).is_none(), "offset {offset} twice");
    }
}

/// The same paths with the servers in this process (so line coverage sees the engine and the
/// subscriber): fan-out across two tasks, resume on the other task, history over HTTP, and a
/// subscriber connection killed and re-established.
async fn in_process_tasks_share_fan_out_history_and_resume(redis: RedisDeployment) {
    let first = redis.server(|_| {});
    let second = redis.server(|_| {});
    let mut watcher = Client::connect(&second.ws_url("/ws")).await;
    let confirmed = watcher.request(json!({"action": "subscribe", "project_id": "ip", "recover": true})).await;
    assert_eq!(confirmed["offset"], 0);
    let epoch = confirmed["epoch"].as_str().unwrap().to_owned();
    for seq in 0..5 {
        let receipt: Value =
            first.publish(json!({"project_id": "ip", "data": {"seq": seq}})).await.json().await.unwrap();
        assert_eq!(receipt["offset"], seq + 1);
    }
    assert_eq!(read_messages(&mut watcher, 5).await.iter().map(|m| m.2).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);

    redis.kill_pubsub_connections();
    for seq in 5..8 {
        first.publish(json!({"project_id": "ip", "data": {"seq": seq}})).await;
    }
    assert_eq!(read_messages(&mut watcher, 3).await.iter().map(|m| m.2).collect::<Vec<_>>(), vec![5, 6, 7]);

    let mut resumed = Client::connect(&first.ws_url("/ws")).await;
    let answer = resumed
        .request(json!({"action": "subscribe", "project_id": "ip", "since": {"offset": 6, "epoch": epoch}}))
        .await;
    assert_eq!(answer["recovered"], true);
    assert_eq!(read_messages(&mut resumed, 2).await.iter().map(|m| m.2).collect::<Vec<_>>(), vec![6, 7]);

    let history = common::get_json(second.http_url("/api/v1/projects/ip/history?since=5&limit=2")).await;
    assert_eq!(history["offset"], 8);
    assert_eq!(history["recovered"], true);
    assert_eq!(history["publications"].as_array().unwrap().len(), 2);
    let ready = common::get_json(second.http_url("/ready")).await;
    assert_eq!(ready["redis"], "up");
}

/// Redis up at start, then gone: subscribes are answered at once (without a position), and
/// `/ready` says why it is 503.
async fn with_redis_gone_subscribes_are_answered_at_once_and_ready_says_why(mut redis: RedisDeployment) {
    let server = ChildServer::spawn(&redis.env()).await;
    server.wait_ready().await;
    redis.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let response = reqwest::get(server.http_url("/ready")).await.unwrap();
        if response.status() == 503 {
            break response.json::<Value>().await.unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "/ready stayed 200 with Redis gone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body, json!({"status": "redis_down", "redis": "down"}));

    let mut client = Client::connect(&server.ws_url("/ws")).await;
    for (request, project) in [
        (json!({"action": "subscribe", "project_id": "plain"}), "plain"),
        (json!({"action": "subscribe", "project_id": "resumed", "since": {"offset": 3, "epoch": "e"}}), "resumed"),
    ] {
        let started = std::time::Instant::now();
        let confirmed = client.request(request).await;
        let took = started.elapsed();
        assert_eq!(confirmed["type"], "subscription_confirmed", "{confirmed}");
        assert_eq!(confirmed["project_id"], project);
        assert!(took < Duration::from_millis(500), "{project}: confirmed after {took:?}");
    }
}

/// Two tasks over one Redis, each with a queue of 64 messages: a resume on one of 1000
/// publications of 6 KB made on the other is fed at the client's pace, never closed, and the
/// publications made meanwhile (overflowing the hold many times) follow without gap or duplicate.
async fn a_long_resume_on_another_task_is_fed_at_the_clients_pace_without_gap_or_duplicate(redis: RedisDeployment) {
    let mut env = redis.env();
    // As in engine_contract's resume test: the replay is paced by the queue's bytes; 256 messages
    // leave live frames room for a delivery burst after a stall of the test's own machine.
    env.extend([("HISTORY_SIZE", "5000".to_owned()), ("OUTBOUND_QUEUE_MESSAGES", "256".to_owned())]);
    let (publisher, subscriber) = (ChildServer::spawn(&env).await, ChildServer::spawn(&env).await);
    let address = |server: &ChildServer| format!("127.0.0.1:{}", server.port).parse().unwrap();
    common::resume_while_publishing(address(&publisher), address(&subscriber), "long", 150, 600).await;
    let text = reqwest::get(subscriber.http_url("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(common::metric_value(&text, "agenticai_ws_slow_consumers_closed_total"), 0.0);
}

/// The resume seam on Redis, its first history read in flight: a task's Redis requests are
/// held (its pub/sub flows on) while a client resumes there from offset 0 of 5 publications and 5
/// more are published through another task. A watcher on the first task gets the 5 live, so its
/// hub had them while the resume waited for its read; the read then runs and finds all 10. The
/// resuming client gets its confirmation first, then offsets 1 to 10 exactly once, in order:
/// what the seam held back and what the replay read meet without gap or duplicate.
#[tokio::test]
async fn publications_made_while_a_resumes_first_history_read_waits_follow_its_replay_exactly() {
    let redis = RedisServer::start();
    let proxy = RequestHoldingProxy::start(&redis.url()).await;
    let held_task = ChildServer::spawn(&[("REDIS_URL", proxy.url.clone())]).await;
    let other_task = ChildServer::spawn(&[("REDIS_URL", redis.url())]).await;
    let publish = |n: u64| {
        let url = other_task.http_url("/api/v1/publish");
        async move {
            let body = json!({"project_id": "seam", "data": {"seq": n}});
            let receipt: Value =
                reqwest::Client::new().post(url).json(&body).send().await.unwrap().json().await.unwrap();
            assert_eq!(receipt["offset"], n, "{receipt}");
            receipt
        }
    };
    let mut epoch = Value::Null;
    for n in 1..=5 {
        epoch = publish(n).await["epoch"].clone();
    }
    let mut watcher = Client::connect(&held_task.ws_url("/ws")).await;
    watcher.request(json!({"action": "subscribe", "project_id": "seam"})).await;
    let mut resumer = Client::connect(&held_task.ws_url("/ws")).await;
    proxy.hold(true);
    let since = json!({"offset": 0, "epoch": epoch});
    resumer.send(json!({"action": "subscribe", "project_id": "seam", "since": since})).await;
    proxy.wait_for_held("agenticai:{seam}:stream\r\n").await;
    for n in 6..=10 {
        publish(n).await;
    }
    let live: Vec<u64> = read_messages(&mut watcher, 5).await.into_iter().map(|(_, _, seq)| seq).collect();
    assert_eq!(live, [6, 7, 8, 9, 10], "the task had them before the resume's read ran");
    proxy.hold(false);
    let confirmed = resumer.recv().await;
    assert_eq!(
        (confirmed["type"].as_str(), confirmed["recovered"].as_bool()),
        (Some("subscription_confirmed"), Some(true)),
        "{confirmed}"
    );
    let offsets: Vec<u64> = read_messages(&mut resumer, 10).await.into_iter().map(|(offset, _, _)| offset).collect();
    assert_eq!(offsets, (1..=10).collect::<Vec<_>>(), "no gap and no duplicate at the seam");
    resumer.expect_silence(Duration::from_millis(300)).await;
}

/// A client greeted on a URL naming a project (`?project_id=`, subscribed silently, with no
/// confirmation) gets every publication made after the greeting, also when its task's SUBSCRIBE
/// to the project's channel is slow: here it waits 500 ms in a proxy while the publish goes
/// through. (The greeting used to come at once, and such a publication never reached it.)
#[tokio::test]
async fn a_client_greeted_on_a_project_url_gets_what_is_published_right_after_the_greeting() {
    let redis = RedisServer::start();
    let proxy = RequestHoldingProxy::holding_subscriptions(&redis.url()).await;
    let task = ChildServer::spawn(&[("REDIS_URL", proxy.url.clone())]).await;
    proxy.hold(true);
    let greeted_then_published = async {
        let client = Client::connect(&task.ws_url("/ws?project_id=greeted")).await;
        let response = task.publish(json!({"project_id": "greeted", "data": {"seq": 1}})).await;
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        client
    };
    let slow_subscribe = async {
        proxy.wait_for_held("agenticai:{greeted}:pub").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.hold(false);
    };
    let (mut client, ()) = tokio::join!(greeted_then_published, slow_subscribe);
    let seen = read_messages(&mut client, 1).await;
    assert_eq!((seen[0].0, seen[0].2), (1, 1), "{seen:?}");
}

/// The sum of the frames a project's Redis stream holds.
fn stream_bytes(redis: &RedisDeployment, project: &str) -> usize {
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis.command(&["XRANGE", &format!("agenticai:{{{project}}}:stream"), "-", "+"]);
    entries.iter().map(|(_, fields)| fields.iter().map(|(_, frame)| frame.len()).sum::<usize>()).sum()
}

async fn the_redis_history_keeps_at_most_history_max_bytes_per_project_and_is_read_in_pages(redis: RedisDeployment) {
    let mut env = redis.env();
    env.extend([("HISTORY_MAX_BYTES", "1000000".to_owned()), ("HISTORY_PAGE_BYTES", "250000".to_owned())]);
    let server = ChildServer::spawn(&env).await;
    let mut epoch = String::new();
    for n in 1..=30 {
        let body = json!({"project_id": "heavy", "data": {"n": n, "pad": "x".repeat(100_000)}});
        let receipt: Value = server.publish(body).await.json().await.unwrap();
        epoch = receipt["epoch"].as_str().unwrap().to_owned();
    }
    let retained: usize = redis.command(&["XLEN", "agenticai:{heavy}:stream"]);
    assert!((8..=10).contains(&retained), "{retained} publications of 100 KB kept under 1 MB");
    let counted: usize = redis.command(&["GET", "agenticai:{heavy}:bytes"]);
    assert_eq!(counted, stream_bytes(&redis, "heavy"), "the byte counter is the stream's");
    assert!(counted <= 1_000_000, "{counted} bytes kept");

    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let oldest = client
        .request(json!({"action": "subscribe", "project_id": "heavy", "since": {"offset": 1, "epoch": epoch}}))
        .await;
    assert_eq!(oldest["recovered"], false, "{oldest}");

    // Over HTTP, from the oldest kept, a page of at most 250 KB at a time.
    let first_kept = 30 - retained as u64 + 1;
    let (mut since, mut offsets) = (first_kept - 1, Vec::new());
    loop {
        let url = server.http_url(&format!("/api/v1/projects/heavy/history?since={since}&limit=1000"));
        let body = reqwest::get(url).await.unwrap().bytes().await.unwrap();
        assert!(body.len() < 260_000, "a page of {} bytes", body.len());
        let page: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(page["recovered"], true, "{since}");
        offsets.extend(page["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()));
        match page["next_since"].as_u64() {
            Some(next) => since = next,
            None => break,
        }
    }
    assert_eq!(offsets, (first_kept..=30).collect::<Vec<_>>());

    // A counter lost (an eviction policy, an older version's keys) is summed again from the stream.
    let _deleted: i64 = redis.command(&["DEL", "agenticai:{heavy}:bytes"]);
    server.publish(json!({"project_id": "heavy", "data": {"n": 31, "pad": "x".repeat(100_000)}})).await;
    let counted: usize = redis.command(&["GET", "agenticai:{heavy}:bytes"]);
    assert_eq!(counted, stream_bytes(&redis, "heavy"));
    assert!(counted <= 1_000_000, "{counted} bytes kept");
}

/// Subscribes a client to `project` on each of `servers`, in order.
async fn subscribers_on(servers: &[&ChildServer], project: &str) -> Vec<Client> {
    let mut subscribers = Vec::new();
    for server in servers {
        let mut client = Client::connect(&server.ws_url("/ws")).await;
        let confirmed = client.request(json!({"action": "subscribe", "project_id": project})).await;
        assert_eq!(confirmed["type"], "subscription_confirmed");
        subscribers.push(client);
    }
    subscribers
}

/// Publishes `{"seq": n}` for n in 0..count to `project`, 10 ms apart, through `publisher(n)`,
/// calling `before(n)` first (where a test changes the topology); the seqs confirmed. A 503 is
/// a refusal (never confirmed); anything else fails the test. At least `min_confirmed` must be.
async fn publish_steadily<'a>(
    project: &str,
    count: u64,
    min_confirmed: usize,
    publisher: impl Fn(u64) -> &'a ChildServer,
    mut before: impl FnMut(u64),
) -> Vec<u64> {
    let (mut confirmed, mut refused) = (Vec::new(), 0);
    for seq in 0..count {
        before(seq);
        let response = publisher(seq).publish(json!({"project_id": project, "data": {"seq": seq}})).await;
        match response.status().as_u16() {
            200 => confirmed.push(seq),
            503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(confirmed.len() >= min_confirmed, "{} of {count} confirmed ({refused} refused)", confirmed.len());
    confirmed
}

/// Every subscriber got exactly the confirmed seqs, once each and in order (read until 3 s of
/// silence).
async fn assert_each_got_exactly(subscribers: &mut [Client], confirmed: &[u64]) {
    for (index, client) in subscribers.iter_mut().enumerate() {
        let mut received = Vec::new();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(3), client.recv()).await;
            let Ok(message) = message else { break };
            if message["type"] == "message" && message.get("offset").is_some() {
                received.push(message["data"]["seq"].as_u64().unwrap());
            }
        }
        assert_eq!(received, confirmed, "subscriber {index} lost, repeated or reordered a confirmed publication");
    }
}

/// On a Redis Cluster, a steady publish load on one task, subscribers on two, and the project's
/// slot moved to another shard meanwhile (its keys migrated, the old owner dropping the sharded
/// subscription with a `sunsubscribe`): every subscriber gets every confirmed publication once
/// and in order.
#[tokio::test]
async fn a_slot_moved_under_load_loses_no_confirmed_publication() {
    let mut redis = RedisDeployment::cluster();
    let servers = [ChildServer::spawn(&redis.env()).await, ChildServer::spawn(&redis.env()).await];
    let RedisDeployment::Cluster(cluster) = &mut redis else { unreachable!("a cluster was started") };
    let mut subscribers = subscribers_on(&[&servers[0], &servers[1]], "mv").await;
    let confirmed = publish_steadily(
        "mv",
        200,
        190,
        |_| &servers[0],
        |seq| {
            if seq == 100 {
                cluster.move_slot_of("agenticai:{mv}:stream");
            }
        },
    )
    .await;
    assert_each_got_exactly(&mut subscribers, &confirmed).await;
}

/// A failover under a steady publish load, on a Redis Cluster: the replica of the shard owning
/// the project is promoted (`CLUSTER FAILOVER`), then the old primary killed. Every subscriber, on
/// two tasks, gets every confirmed publication once and in order; what was refused meanwhile (if
/// anything) was never confirmed.
#[tokio::test]
async fn a_failover_under_load_loses_no_confirmed_publication() {
    loses_no_confirmed_publication_under_load("fo", |cluster, seq, (primary, replica)| {
        if seq == 100 {
            cluster.fail_over_to(replica);
        }
        if seq == 150 {
            cluster.nodes[primary].kill();
        }
    })
    .await;
}

/// On a new Redis Cluster, two tasks with two subscribers to `project` each, and 300
/// publications through both in turn, `change(cluster, seq, (primary, replica))` called before
/// each (the nodes of the shard owning the project): at least 250 are confirmed, and every
/// subscriber gets every confirmed one once and in order.
async fn loses_no_confirmed_publication_under_load(
    project: &str,
    mut change: impl FnMut(&mut RedisCluster, u64, (usize, usize)),
) {
    let mut redis = RedisDeployment::cluster();
    let servers = [ChildServer::spawn(&redis.env()).await, ChildServer::spawn(&redis.env()).await];
    let RedisDeployment::Cluster(cluster) = &mut redis else { unreachable!("a cluster was started") };
    let shard = cluster.primary_and_replica_of(&format!("agenticai:{{{project}}}:stream"));
    let mut subscribers = subscribers_on(&[&servers[0], &servers[1], &servers[0], &servers[1]], project).await;
    let publisher = |seq: u64| &servers[(seq as usize) % servers.len()];
    let confirmed = publish_steadily(project, 300, 250, publisher, |seq| change(cluster, seq, shard)).await;
    assert_each_got_exactly(&mut subscribers, &confirmed).await;
}

/// Each shard's value of a per-shard series (`name{shard="..."}`), smallest first.
fn per_shard(metrics: &str, name: &str) -> Vec<f64> {
    let prefix = format!("{name}{{shard=");
    let mut values: Vec<f64> = metrics
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse().ok())
        .collect();
    values.sort_by(f64::total_cmp);
    values
}

/// Polls `/metrics` until the per-shard series `name` has these values (smallest first); panics
/// past `within`.
async fn await_per_shard(server: &ChildServer, name: &str, values: [f64; 3], within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = reqwest::get(server.http_url("/metrics")).await.unwrap().text().await.unwrap();
        if per_shard(&text, name) == values {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{name} is not {values:?} within {within:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/ready` until it answers `status`; panics past `within`.
async fn await_ready_status(server: &ChildServer, status: u16, within: Duration) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let response = reqwest::get(server.http_url("/ready")).await.unwrap();
        if response.status() == status {
            return response.json().await.unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "/ready did not answer {status} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On a Redis Cluster, `/ready` and the per-shard series: a replica killed leaves `/ready` 200
/// throughout (past the cluster's node timeout) and shows as its shard's
/// `redis_shard_replicas_up` 0; its primary killed too, the shard has no primary and `/ready`
/// is 503 within seconds, until the primary is restarted (same port, data and `nodes.conf`).
/// Messages are counted on the shard that carries them.
#[tokio::test]
async fn a_lost_replica_is_a_metric_and_a_shard_without_primary_is_unreadiness() {
    let mut redis = RedisDeployment::cluster();
    let server = ChildServer::spawn(&redis.env()).await;
    server.wait_ready().await;
    let RedisDeployment::Cluster(cluster) = &mut redis else { unreachable!("a cluster was started") };
    let metrics = || async { reqwest::get(server.http_url("/metrics")).await.unwrap().text().await.unwrap() };
    let mut subscriber = subscribers_on(&[&server], "rd").await;
    assert_eq!(server.publish(json!({"project_id": "rd", "data": {"seq": 0}})).await.status(), 200);
    assert_eq!(read_messages(&mut subscriber[0], 1).await.len(), 1);
    let text = metrics().await;
    let received = per_shard(&text, "agenticai_ws_redis_shard_messages_received_total");
    assert!(received[..2] == [0.0, 0.0] && received[2] >= 1.0, "one shard carries the project: {text}");
    await_per_shard(&server, "agenticai_ws_redis_shard_subscribed", [1.0; 3], Duration::from_secs(3)).await;

    let (primary, replica) = cluster.primary_and_replica_of("agenticai:{rd}:stream");
    cluster.nodes[replica].kill();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        let response = reqwest::get(server.http_url("/ready")).await.unwrap();
        assert_eq!(response.status(), 200, "a lost replica made /ready {:?}", response.text().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = metrics().await;
    assert_eq!(per_shard(&text, "agenticai_ws_redis_shard_replicas_up"), [0.0, 1.0, 1.0], "{text}");
    assert_eq!(per_shard(&text, "agenticai_ws_redis_shard_replicas"), [1.0; 3], "{text}");
    assert_eq!(per_shard(&text, "agenticai_ws_redis_shard_primary_up"), [1.0; 3], "{text}");
    assert_eq!(common::metric_value(&text, "agenticai_ws_redis_connected"), 1.0);

    cluster.nodes[primary].kill();
    let body = await_ready_status(&server, 503, Duration::from_secs(5)).await;
    assert_eq!(body, json!({"status": "redis_down", "redis": "down"}));
    let text = metrics().await;
    assert_eq!(per_shard(&text, "agenticai_ws_redis_shard_primary_up"), [0.0, 1.0, 1.0], "{text}");

    cluster.nodes[primary].restart();
    await_ready_status(&server, 200, Duration::from_secs(30)).await;
    await_per_shard(&server, "agenticai_ws_redis_shard_primary_up", [1.0; 3], Duration::from_secs(1)).await;
}

/// A node restarted under a steady publish load, on a Redis Cluster: the primary of the shard
/// owning the project killed outright, then started again on its port with its data and its
/// `nodes.conf` (the cluster takes it back as the primary, or, if its replica was promoted
/// meanwhile, as that one's replica). Every subscriber, on two tasks, gets every confirmed
/// publication once and in order.
#[tokio::test]
async fn a_primary_restarted_under_load_loses_no_confirmed_publication() {
    loses_no_confirmed_publication_under_load("rs", |cluster, seq, (primary, _)| {
        if seq == 100 {
            cluster.nodes[primary].kill();
        }
        if seq == 102 {
            cluster.nodes[primary].restart();
        }
    })
    .await;
}
