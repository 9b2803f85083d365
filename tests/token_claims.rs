//! What a token must say, and how it is presented (issue 22, items 3, 8c and 8e), through real
//! sockets: with JWT_ISSUER and JWT_AUDIENCE set, `iss` and `aud` are required and must match
//! (`aud` a string or an array holding the audience, `iss` a string); an `exp` beyond any real
//! date is a bad token, not one that wraps the expiry arithmetic; and the `Bearer` scheme is
//! case-insensitive (RFC 7235), for publish keys and tokens alike.

pub mod common;

use common::{
    tokens::{self, claims, hs256},
    Client, TestServer,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "agenticai-gateway";
const KEY: &str = "token-claims-publish-key";

fn token_url(server: &TestServer, token: &str) -> String {
    server.ws_url(&format!("/ws?token={token}"))
}

/// The status and JSON body of a refused upgrade.
async fn refused(url: String) -> (u16, Value) {
    let refused = common::refused_upgrade(url).await;
    (refused.status, refused.body)
}

#[tokio::test]
async fn with_an_issuer_and_audience_configured_both_claims_are_required_and_must_match() {
    let server = TestServer::start(|config| {
        config.access.jwt_secret = Some(tokens::SECRET.into());
        config.access.jwt_issuer = Some(ISSUER.into());
        config.access.jwt_audience = Some(AUDIENCE.into());
    });
    let accepted = [json!({"iss": ISSUER, "aud": AUDIENCE}), json!({"iss": ISSUER, "aud": ["elsewhere", AUDIENCE]})];
    for extra in accepted {
        let token = hs256(&claims("alice", &["p"], 300, extra.clone()));
        let mut alice = Client::connect(&token_url(&server, &token)).await;
        let answer = alice.request(json!({"action": "subscribe", "project_id": "p", "request_id": 1})).await;
        assert_eq!(answer["type"], "subscription_confirmed", "{extra}: {answer}");
    }
    let refused_claims = [
        json!({}),
        json!({"iss": ISSUER}),
        json!({"aud": AUDIENCE}),
        json!({"iss": [ISSUER], "aud": AUDIENCE}),
        json!({"iss": null, "aud": AUDIENCE}),
        json!({"iss": "https://issuer.example.evil", "aud": AUDIENCE}),
        json!({"iss": ISSUER, "aud": ["elsewhere"]}),
        json!({"iss": ISSUER, "aud": AUDIENCE.to_uppercase()}),
    ];
    for extra in &refused_claims {
        let token = hs256(&claims("mallory", &["*"], 300, extra.clone()));
        let (status, body) = refused(token_url(&server, &token)).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{extra}: {body}");
        assert!(body["message"].as_str().is_some_and(|message| message.contains("issuer or audience")), "{body}");
    }
    let refusals = server.metric("agenticai_ws_auth_failures_total{reason=\"wrong_issuer_or_audience\"}").await;
    assert_eq!(refusals, refused_claims.len() as f64);

    // The same in the first frame: refused, and the connection closed with 3500.
    let mut browser = Client::connect(&server.ws_url("/ws")).await;
    let no_issuer = hs256(&claims("mallory", &["*"], 300, json!({"aud": AUDIENCE})));
    let answer = browser.request(json!({"action": "authenticate", "token": no_issuer})).await;
    assert_eq!(answer["code"], "unauthorized", "{answer}");
    assert_eq!(browser.expect_close().await, 3500);
}

#[tokio::test]
async fn an_issuer_alone_requires_iss_and_leaves_aud_alone() {
    let server = TestServer::start(|config| {
        config.access.jwt_secret = Some(tokens::SECRET.into());
        config.access.jwt_issuer = Some(ISSUER.into());
    });
    Client::connect(&token_url(&server, &hs256(&claims("alice", &["p"], 300, json!({"iss": ISSUER}))))).await;
    let (status, _) = refused(token_url(&server, &hs256(&claims("mallory", &["p"], 300, json!({}))))).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_expiry_beyond_the_year_9999_is_a_bad_token_not_an_instant_close() {
    let server = TestServer::start(|config| config.access.jwt_secret = Some(tokens::SECRET.into()));
    for exp in [u64::MAX, u64::MAX - 3600, 1 << 63, 253_402_300_800] {
        let token = hs256(&claims("mallory", &["*"], 300, json!({"exp": exp})));
        let (status, body) = refused(token_url(&server, &token)).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "exp {exp}: {body}");
        assert!(body["message"].as_str().is_some_and(|message| message.contains("exp")), "{body}");
    }
    assert_eq!(server.metric("agenticai_ws_auth_failures_total{reason=\"exp_out_of_range\"}").await, 4.0);

    // The last second of 9999 is a date: accepted, its refresh advice between now and then.
    let far = hs256(&claims("alice", &["p"], 300, json!({"exp": 253_402_300_799u64})));
    let mut alice = Client::connect(&server.ws_url("/ws")).await;
    let answer = alice.request(json!({"action": "authenticate", "token": far})).await;
    assert_eq!(answer["type"], "authenticated", "{answer}");
    let refresh_at = answer["refresh_at"].as_u64().expect("refresh_at");
    assert!(refresh_at > tokens::now() && refresh_at < 253_402_300_799, "{answer}");
    alice.expect_silence(std::time::Duration::from_millis(300)).await;
    let answer = alice.request(json!({"action": "subscribe", "project_id": "p", "request_id": 2})).await;
    assert_eq!(answer["type"], "subscription_confirmed", "{answer}");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = TestServer::start(|config| {
        config.access.jwt_secret = Some(tokens::SECRET.into());
        config.access.publish_api_keys = vec![KEY.into()];
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
