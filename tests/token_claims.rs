//! How a credential is presented (issue 22, item 8e), through real sockets: the `Bearer` scheme
//! is case-insensitive (RFC 7235), for publish keys and tokens alike.

pub mod common;

use common::{
    tokens::{self, claims, hs256},
    Client, TestServer,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

const KEY: &str = "token-claims-publish-key";

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = TestServer::start(|config| {
        config.jwt_secret = Some(tokens::SECRET.into());
        config.publish_api_keys = vec![KEY.into()];
    });
    let http = reqwest::Client::new();
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let published = http
            .post(server.http_url("/api/v1/publish"))
            .header("Authorization", format!("{scheme} {KEY}"))
            .json(&json!({"project_id": "p", "data": scheme}))
            .send()
            .await
            .expect("publish");
        assert_eq!(published.status(), 200, "{scheme}");
        let history = http
            .get(server.http_url("/api/v1/projects/p/history"))
            .header("Authorization", format!("{scheme} {KEY}"))
            .send()
            .await
            .expect("history");
        assert_eq!(history.status(), 200, "{scheme}");
    }
    for not_bearer in [format!("Basic {KEY}"), format!("Bearer{KEY}"), KEY.to_owned()] {
        let refused = http
            .post(server.http_url("/api/v1/publish"))
            .header("Authorization", &not_bearer)
            .json(&json!({"project_id": "p", "data": 0}))
            .send()
            .await
            .expect("publish");
        assert_eq!(refused.status(), 401, "{not_bearer}");
    }

    // A token on the upgrade, as a non-browser client may write it.
    let token = hs256(&claims("alice", &["p"], 300, json!({})));
    let mut request = server.ws_url("/ws").into_client_request().expect("a URL");
    request.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("bearer {token}")).unwrap());
    let mut alice = Client::connect_with(request).await;
    let answer = alice.request(json!({"action": "subscribe", "project_id": "p", "request_id": 1})).await;
    assert_eq!(answer["type"], "subscription_confirmed", "{answer}");
}
