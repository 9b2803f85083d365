//! A session's identity deadlines and counts (`session/authentication.rs`), through real sockets:
//! a token is honoured until `exp` plus JWT_LEEWAY_SECS; the authentication timeout closes only
//! connections that must authenticate (tokens configured, no publish key); a first `authenticate`
//! counts the connection against its user's cap and as authenticated, a refresh does neither
//! again. Killed mutants (docs/testing.md, "Mutation testing").

pub mod common;

use std::time::{Duration, Instant};

use common::{
    tokens::{self, claims, hs256},
    Client, TestServer,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

const KEY: &str = "session-identity-publish-key";

#[tokio::test]
async fn a_token_is_honoured_until_exp_plus_the_leeway() {
    let leeway = Duration::from_secs(4);
    let server = TestServer::start(|config| {
        config.access.jwt_secret = Some(tokens::SECRET.into());
        config.access.jwt_leeway = leeway;
    });
    let started = Instant::now();
    let token = hs256(&claims("erin", &["*"], 1, json!({})));
    let mut client = Client::connect(&server.ws_url(&format!("/ws?token={token}"))).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong", "past exp, within the leeway");
    assert_eq!(client.expect_close().await, 3005);
    // `exp` is a whole second after the start at the earliest.
    assert!(started.elapsed() >= leeway, "closed after {:?}", started.elapsed());
}

#[tokio::test]
async fn only_connections_that_must_authenticate_are_timed_out() {
    let auth_timeout = Duration::from_secs(1);
    let with_tokens = TestServer::start(|config| {
        config.access.jwt_secret = Some(tokens::SECRET.into());
        config.access.publish_api_keys = vec![KEY.into()];
        config.access.auth_timeout = auth_timeout;
    });
    let without_tokens = TestServer::start(|config| config.access.auth_timeout = auth_timeout);
    let mut keyed = with_tokens.ws_url("/ws").into_client_request().unwrap();
    keyed.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap());
    let mut service = Client::connect_with(keyed).await;
    let mut anonymous = Client::connect(&without_tokens.ws_url("/ws")).await;
    let mut must_authenticate = Client::connect(&with_tokens.ws_url("/ws")).await;

    assert_eq!(must_authenticate.expect_close().await, 3502);
    service.expect_silence(Duration::from_millis(500)).await;
    anonymous.expect_silence(Duration::from_millis(500)).await;
    assert_eq!(service.request(json!({"action": "ping"})).await["type"], "pong", "a service's key connection");
    assert_eq!(anonymous.request(json!({"action": "ping"})).await["type"], "pong", "a server without tokens");
}

#[tokio::test]
async fn a_first_authenticate_counts_against_the_user_cap_and_a_refresh_does_not() {
    let server = TestServer::start(|config| {
        config.access.jwt_secret = Some(tokens::SECRET.into());
        config.access.max_connections_per_user = 1;
    });
    let token = || hs256(&claims("frank", &["*"], 300, json!({})));
    let mut first = Client::connect(&server.ws_url("/ws")).await;
    assert_eq!(first.request(json!({"action": "authenticate", "token": token()})).await["type"], "authenticated");
    server.wait_for_metric("agenticai_ws_authenticated_connections", 1.0).await;
    let refreshed = first.request(json!({"action": "authenticate", "token": token()})).await;
    assert_eq!(refreshed["type"], "authenticated", "a refresh is not a second connection: {refreshed}");
    assert_eq!(server.metric("agenticai_ws_authenticated_connections").await, 1.0);

    let mut second = Client::connect(&server.ws_url("/ws")).await;
    let refused = second.request(json!({"action": "authenticate", "token": token()})).await;
    assert_eq!(refused["code"], "too_many_connections", "{refused}");
    assert_eq!(second.expect_close().await, 3504);
}
