//! Who may read a project's audit (`GET /api/v1/projects/{id}/messages`): with publish keys, the
//! right key and nothing else; with tokens, a token that may publish to that project and nothing
//! else. Each refusal is checked by status and code, and never says whether the project exists.

pub mod common;

use common::{
    tokens::{self, claims, hs256},
    TestServer,
};
use serde_json::{json, Value};

const PROJECT: &str = "acme-audited";
const KEY: &str = "audit-test-key";

/// The status and JSON body of an audit read with this `Authorization` value.
async fn read_audit(server: &TestServer, authorization: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(server.http_url(&format!("/api/v1/projects/{PROJECT}/messages")));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = common::wire::send(request).await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn with_publish_keys_only_the_right_key_reads_the_audit() {
    let server = TestServer::start(|config| config.access.publish_api_keys = vec![KEY.into()]);
    let published = server.publish_with_key(json!({"project_id": PROJECT, "data": 1}), KEY).await;
    assert_eq!(published.status(), 200);

    let (status, body) = read_audit(&server, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "no key: {body}");
    let (status, body) = read_audit(&server, Some("Bearer not-the-key")).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "a wrong key: {body}");

    let (status, body) = read_audit(&server, Some(&format!("Bearer {KEY}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
}

#[tokio::test]
async fn with_tokens_only_a_publish_token_for_the_project_reads_its_audit() {
    // A key configured too: without one, a loopback bind opens the HTTP API to this machine.
    let server = TestServer::start(|config| {
        config.access.jwt_secret = Some(tokens::SECRET.into());
        config.access.publish_api_keys = vec![KEY.into()];
    });
    let bearer = |claims: &Value| format!("Bearer {}", hs256(claims));

    let (status, body) = read_audit(&server, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "no token: {body}");

    let other_project = bearer(&claims("mallory", &["globex-*"], 300, json!({"scope": "publish subscribe"})));
    let (status, body) = read_audit(&server, Some(&other_project)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "another project's token: {body}");
    assert!(body["message"].as_str().is_some_and(|message| message.contains(PROJECT)), "{body}");

    let subscribe_only = bearer(&claims("viewer", &["acme-*"], 300, json!({"scope": "subscribe"})));
    let (status, body) = read_audit(&server, Some(&subscribe_only)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "a subscribe-only token: {body}");

    let publisher = bearer(&claims("svc", &["acme-*"], 300, json!({"scope": "publish"})));
    let (status, body) = read_audit(&server, Some(&publisher)).await;
    assert_eq!(status, 200, "a publish token for the project: {body}");
    assert!(body["items"].is_array(), "{body}");
}
