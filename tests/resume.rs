//! Offsets, epochs, history and resume on one task, on every engine (`memory::NAME`,
//! `redis::NAME`, `redis_cluster::NAME`), but the bound across projects the memory engine alone
//! keeps.

pub mod common;

use std::time::Duration;

use common::{Backend, ChildServer, Client, TestServer};
use serde_json::{json, Value};

on_both_engines!(
    a_resuming_client_gets_what_it_missed_then_the_live_stream,
    a_resume_the_history_cannot_cover_says_recovered_false,
    history_over_http,
    a_resume_larger_than_the_outbound_queue_is_replayed_whole_and_the_connection_stays_open,
    publications_during_a_long_replay_follow_it_without_gap_or_duplicate,
    publications_overflowing_the_hold_during_a_replay_are_read_from_the_history,
    a_hold_emptied_while_the_last_page_is_fed_makes_the_replay_read_on,
    a_history_answer_is_one_page_of_bounded_bytes_and_names_the_next,
    a_project_history_keeps_at_most_history_max_bytes,
);

async fn publish(server: &TestServer, project: &str, n: u64) -> Value {
    let response = server.publish(json!({"project_id": project, "data": {"n": n}})).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    response.json().await.unwrap()
}

async fn a_resuming_client_gets_what_it_missed_then_the_live_stream(backend: Backend) {
    let server = backend.server(|_| {});
    for n in 1..=2 {
        publish(&server, "p", n).await;
    }
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let plain = client.request(json!({"action": "subscribe", "project_id": "p"})).await;
    assert_eq!(plain, json!({"type": "subscription_confirmed", "project_id": "p"}), "the original shape by default");
    let confirmed = client.request(json!({"action": "subscribe", "project_id": "p", "recover": true})).await;
    assert_eq!(confirmed["type"], "subscription_confirmed");
    assert_eq!(confirmed["offset"], 2, "{confirmed}");
    let epoch = confirmed["epoch"].as_str().unwrap().to_owned();
    assert!(confirmed.get("recovered").is_none());

    let receipt = publish(&server, "p", 3).await;
    assert_eq!(receipt["offset"], 3);
    let message = client.recv().await;
    assert_eq!((message["offset"].as_u64(), message["epoch"].as_str()), (Some(3), Some(epoch.as_str())));
    drop(client);

    for n in 4..=7 {
        publish(&server, "p", n).await;
    }
    let mut back = Client::connect(&server.ws_url("/ws")).await;
    back.send(
        json!({"action": "subscribe", "project_id": "p", "since": {"offset": 3, "epoch": epoch}, "request_id": "r"}),
    )
    .await;
    let resumed = back.recv().await;
    assert_eq!(resumed["type"], "subscription_confirmed");
    assert_eq!(resumed["recovered"], true);
    assert_eq!(resumed["request_id"], "r");
    assert_eq!(resumed["offset"], 7);
    for n in 4..=7 {
        let replayed = back.recv().await;
        assert_eq!(replayed["data"]["n"], n);
        assert_eq!(replayed["offset"], n);
    }
    publish(&server, "p", 8).await;
    let live = back.recv().await;
    assert_eq!(live["offset"], 8);
    back.expect_silence(Duration::from_millis(100)).await;
    assert_eq!(server.metric("agenticai_ws_recoveries_total{outcome=\"recovered\"}").await, 1.0);
}

async fn a_resume_the_history_cannot_cover_says_recovered_false(backend: Backend) {
    let server = backend.server(|config| config.engine.history_size = 3);
    for n in 1..=6 {
        publish(&server, "p", n).await;
    }
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let top = client.request(json!({"action": "subscribe", "project_id": "p", "recover": true})).await;
    let epoch = top["epoch"].as_str().unwrap().to_owned();

    let trimmed =
        client.request(json!({"action": "subscribe", "project_id": "p", "since": {"offset": 1, "epoch": epoch}})).await;
    assert_eq!(trimmed["recovered"], false);
    let other_epoch = client
        .request(json!({"action": "subscribe", "project_id": "p", "since": {"offset": 5, "epoch": "nope"}}))
        .await;
    assert_eq!(other_epoch["recovered"], false);
    assert_eq!(other_epoch["epoch"], epoch.as_str());
    client.expect_silence(Duration::from_millis(100)).await;

    let covered =
        client.request(json!({"action": "subscribe", "project_id": "p", "since": {"offset": 4, "epoch": epoch}})).await;
    assert_eq!(covered["recovered"], true);
    assert_eq!(client.recv().await["offset"], 5);
    assert_eq!(client.recv().await["offset"], 6);
    assert_eq!(server.metric("agenticai_ws_recoveries_total{outcome=\"not_recovered\"}").await, 2.0);
}

async fn history_over_http(backend: Backend) {
    let server = backend.server(|config| config.engine.history_size = 5);
    for n in 1..=8 {
        publish(&server, "h", n).await;
    }
    let page = common::get_json(server.http_url("/api/v1/projects/h/history?since=5&limit=2")).await;
    assert_eq!(page["offset"], 8);
    assert_eq!(page["recovered"], true);
    let publications = page["publications"].as_array().unwrap();
    assert_eq!(publications.iter().map(|p| p["offset"].as_u64().unwrap()).collect::<Vec<_>>(), vec![6, 7]);
    assert_eq!(publications[0]["type"], "message");
    assert_eq!(publications[0]["data"]["n"], 6);

    let too_old: Value = common::get_json(server.http_url("/api/v1/projects/h/history?since=1")).await;
    assert_eq!(too_old["recovered"], false);
    let epoch = page["epoch"].as_str().unwrap();
    let wrong_epoch = common::get_json(server.http_url("/api/v1/projects/h/history?since=6&epoch=zzz")).await;
    assert_eq!(wrong_epoch["recovered"], false);
    let url = server.http_url(&format!("/api/v1/projects/h/history?since=6&epoch={epoch}"));
    let right_epoch = common::get_json(url).await;
    assert_eq!(right_epoch["recovered"], true);
    assert_eq!(right_epoch["publications"].as_array().unwrap().len(), 2);
}

/// A publication of about `bytes` bytes, numbered `n`.
async fn publish_padded(server: &TestServer, project: &str, n: u64, bytes: usize) -> Value {
    let response = server.publish(json!({"project_id": project, "data": {"n": n, "pad": "x".repeat(bytes)}})).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    response.json().await.unwrap()
}

/// Reads messages until the one at offset `last`; returns every offset read, in order.
async fn read_offsets_until(client: &mut Client, last: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    while offsets.last() != Some(&last) {
        let message = client.recv().await;
        assert_eq!(message["type"], "message", "{message}");
        offsets.push(message["offset"].as_u64().expect("an offset"));
    }
    offsets
}

async fn a_resume_larger_than_the_outbound_queue_is_replayed_whole_and_the_connection_stays_open(backend: Backend) {
    // 600 publications of 2 KB: 1.2 MB to replay, over the 1 MiB outbound queue.
    let server = backend.server(|_| {});
    let mut epoch = String::new();
    for n in 1..=600 {
        epoch = publish_padded(&server, "big", n, 2_000).await["epoch"].as_str().unwrap().to_owned();
    }
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let confirmed = client
        .request(json!({"action": "subscribe", "project_id": "big", "since": {"offset": 0, "epoch": epoch}}))
        .await;
    assert_eq!(
        (confirmed["recovered"].as_bool(), confirmed["offset"].as_u64()),
        (Some(true), Some(600)),
        "{confirmed}"
    );
    assert_eq!(read_offsets_until(&mut client, 600).await, (1..=600).collect::<Vec<_>>());
    publish(&server, "big", 601).await;
    assert_eq!(client.recv().await["offset"], 601, "live messages follow the replay");
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong", "the connection is open");
    assert_eq!(server.metric("agenticai_ws_slow_consumers_closed_total").await, 0.0);
}

async fn publications_during_a_long_replay_follow_it_without_gap_or_duplicate(backend: Backend) {
    let server = backend.server(|config| config.engine.history_size = 5_000);
    common::resume_while_publishing(server.addr, server.addr, "seam", 20, 20).await;
    assert_eq!(server.metric("agenticai_ws_slow_consumers_closed_total").await, 0.0);
}

async fn publications_overflowing_the_hold_during_a_replay_are_read_from_the_history(backend: Backend) {
    // A queue of 64 messages: the hold (half of it) overflows many times while the replay goes.
    let server = backend.server(|config| {
        config.engine.history_size = 5_000;
        config.connection.outbound_queue_messages = std::num::NonZeroUsize::new(64).unwrap();
    });
    common::resume_while_publishing(server.addr, server.addr, "overflow", 150, 600).await;
    assert_eq!(server.metric("agenticai_ws_slow_consumers_closed_total").await, 0.0);
}

async fn a_hold_emptied_while_the_last_page_is_fed_makes_the_replay_read_on(backend: Backend) {
    // The whole backlog in one page (16 MiB pages, a 32 MiB queue of 16 messages): the
    // publications made while the client has not read it overflow the hold before that page is
    // fed, so the replay, having reached the top it read, must read on rather than release.
    let mut env = backend.env();
    env.extend([
        ("HISTORY_SIZE", "5000".into()),
        ("HISTORY_PAGE_BYTES", (16 << 20).to_string()),
        ("OUTBOUND_QUEUE_BYTES", (32 << 20).to_string()),
        ("OUTBOUND_QUEUE_MESSAGES", "16".into()),
    ]);
    let server = ChildServer::spawn(&env).await;
    let addr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    common::resume_while_publishing(addr, addr, "read-on", 150, 0).await;
}

async fn a_history_answer_is_one_page_of_bounded_bytes_and_names_the_next(backend: Backend) {
    // 12 publications of 250 KiB: 3 MB, past the 1 MiB a history answer carries.
    let server = backend.server(|_| {});
    for n in 1..=12 {
        publish_padded(&server, "pages", n, 250 * 1024).await;
    }
    let mut since = 0;
    let mut offsets = Vec::new();
    let mut pages = 0;
    loop {
        let url = server.http_url(&format!("/api/v1/projects/pages/history?since={since}&limit=1000"));
        let body = common::wire::get(url).await.bytes().await.unwrap();
        assert!(body.len() <= 1_100_000, "a history answer of {} bytes", body.len());
        let page: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((page["recovered"].as_bool(), page["offset"].as_u64()), (Some(true), Some(12)));
        let listed = page["publications"].as_array().unwrap();
        assert!(!listed.is_empty(), "every page makes progress");
        offsets.extend(listed.iter().map(|publication| publication["offset"].as_u64().unwrap()));
        pages += 1;
        match page["next_since"].as_u64() {
            Some(next) => {
                assert_eq!(Some(&next), offsets.last(), "the cursor is the last offset listed");
                since = next;
            }
            None => break,
        }
    }
    assert_eq!(offsets, (1..=12).collect::<Vec<_>>(), "the pages list every publication once");
    assert!(pages >= 3, "{pages} pages");
}

async fn a_project_history_keeps_at_most_history_max_bytes(backend: Backend) {
    // 40 publications of 250 KiB (10 MB) to one project, past the default HISTORY_MAX_BYTES (8 MiB).
    let server = backend.server(|_| {});
    let mut epoch = String::new();
    for n in 1..=40 {
        epoch = publish_padded(&server, "heavy", n, 250 * 1024).await["epoch"].as_str().unwrap().to_owned();
    }
    let history =
        |since: u64| server.http_url(&format!("/api/v1/projects/heavy/history?since={since}&epoch={epoch}&limit=1"));
    let oldest = common::get_json(history(1)).await;
    assert_eq!(oldest["recovered"], false, "the oldest publications are no longer kept");
    let recent = common::get_json(history(35)).await;
    assert_eq!(recent["recovered"], true, "the newest are");
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let oldest = client
        .request(json!({"action": "subscribe", "project_id": "heavy", "since": {"offset": 1, "epoch": epoch}}))
        .await;
    assert_eq!(oldest["recovered"], false, "the oldest publications are no longer kept: {oldest}");
    let recent = client
        .request(json!({"action": "subscribe", "project_id": "heavy", "since": {"offset": 35, "epoch": epoch}}))
        .await;
    assert_eq!(recent["recovered"], true, "the newest are: {recent}");
    assert_eq!(read_offsets_until(&mut client, 40).await, (36..=40).collect::<Vec<_>>());
}

/// The memory engine's bound across projects (Redis bounds each project only).
#[tokio::test]
async fn past_history_max_total_bytes_the_least_recently_published_projects_lose_their_publications() {
    // Five projects of 500 KB each, one after the other, under a 2 MB bound for all of them.
    let server = ChildServer::spawn(&[("HISTORY_MAX_TOTAL_BYTES", "2000000".into())]).await;
    let projects = ["p0", "p1", "p2", "p3", "p4"];
    for project in projects {
        for n in 1..=5 {
            let body = json!({"project_id": project, "data": {"n": n, "pad": "x".repeat(100_000)}});
            assert_eq!(server.publish(body).await.status(), 200);
        }
    }
    let history = |project: &str| server.http_url(&format!("/api/v1/projects/{project}/history?since=0"));
    let oldest = common::get_json(history("p0")).await;
    assert_eq!((oldest["recovered"].as_bool(), oldest["offset"].as_u64()), (Some(false), Some(5)), "{oldest}");
    let newest = common::get_json(history("p4")).await;
    assert_eq!(newest["recovered"], true);
    assert_eq!(newest["publications"].as_array().unwrap().len(), 5, "the most recently published project keeps all");
    let receipt: Value = server.publish(json!({"project_id": "p0", "data": {}})).await.json().await.unwrap();
    assert_eq!((receipt["offset"].as_u64(), &receipt["epoch"]), (Some(6), &oldest["epoch"]), "its position stays");
}
