//! Offsets, epochs, history and resume in single-task mode (history in memory).

pub mod common;

use std::time::Duration;

use common::{Client, TestServer};
use serde_json::{json, Value};

async fn publish(server: &TestServer, project: &str, n: u64) -> Value {
    let response = server.publish(json!({"project_id": project, "data": {"n": n}})).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_resuming_client_gets_what_it_missed_then_the_live_stream() {
    let server = TestServer::start(|_| {});
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

#[tokio::test]
async fn a_resume_the_history_cannot_cover_says_recovered_false() {
    let server = TestServer::start(|config| config.history_size = 3);
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

#[tokio::test]
async fn history_over_http() {
    let server = TestServer::start(|config| config.history_size = 5);
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
