//! The issuer's key set (JWT_JWKS_URL) as the gateway keeps it, through real sockets: it is
//! fetched at start-up, before any token asks; a key that leaves the set stops verifying the
//! tokens it verified before (the verified-token cache follows the set, whether it shrinks or
//! one key replaces another); and the document's size limit, 256 KiB, is exact. Killed mutants
//! of `access/jwks.rs` (docs/testing.md, "Mutation testing").

pub mod common;

use std::time::{Duration, Instant};

use common::{
    tokens::{self, claims, JwksServer},
    Client, TestServer, TIMEOUT,
};
use serde_json::json;

/// Longer than the gateway's shortest interval between two fetches caused by unknown kids (5 s).
const REFETCH_INTERVAL: Duration = Duration::from_millis(5200);
/// The largest JWKS document the gateway takes.
const MAX_JWKS_BYTES: usize = 256 * 1024;

fn with_jwks(jwks: &JwksServer) -> TestServer {
    let url = jwks.url.clone();
    TestServer::start(move |config| config.access.jwt_jwks_url = Some(url))
}

fn token_url(server: &TestServer, token: &str) -> String {
    server.ws_url(&format!("/ws?token={token}"))
}

/// The `message` of the 401 refusing `token`'s upgrade.
async fn refusal(server: &TestServer, token: &str) -> String {
    let refused = common::refused_upgrade(token_url(server, token)).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    refused.body["message"].as_str().unwrap_or_default().to_owned()
}

/// Makes the gateway fetch the set again: once the refetch interval has passed, a token naming a
/// key id the gateway does not know.
async fn refetch(server: &TestServer, jwks: &JwksServer) {
    tokio::time::sleep(REFETCH_INTERVAL).await;
    let before = jwks.requests();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("made-up".into());
    let pem = std::fs::read(format!("{}/tests/fixtures/rsa-b.pem", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    let unknown = jsonwebtoken::encode(&header, &claims("nobody", &["*"], 300, json!({})), &key).unwrap();
    assert_eq!(refusal(server, &unknown).await, "Invalid token: the token's key is unknown");
    assert_eq!(jwks.requests(), before + 1, "the unknown kid made the gateway fetch the set");
}

#[tokio::test]
async fn the_key_set_is_fetched_at_start_up_before_any_token() {
    let jwks = JwksServer::start(tokens::jwks_of(&["rsa-a"])).await;
    let _server = with_jwks(&jwks);
    let deadline = Instant::now() + TIMEOUT;
    while jwks.requests() == 0 {
        assert!(Instant::now() < deadline, "no fetch of the key set within {TIMEOUT:?} of start-up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_key_that_leaves_the_set_no_longer_verifies_the_tokens_it_verified() {
    let jwks = JwksServer::start(tokens::jwks_of(&["rsa-a", "rsa-b"])).await;
    let server = with_jwks(&jwks);
    let signed_by_a = tokens::rs256("rsa-a", &claims("alice", &["*"], 300, json!({})));
    let signed_by_b = tokens::rs256("rsa-b", &claims("bob", &["*"], 300, json!({})));
    // Twice: a first token may wait for the start-up fetch, which changes the set and so
    // empties the verified-token cache; the second time both are verified under the set kept.
    for _ in 0..2 {
        Client::connect(&token_url(&server, &signed_by_a)).await;
        Client::connect(&token_url(&server, &signed_by_b)).await;
    }

    // rsa-a retired: the set shrinks.
    jwks.set(tokens::jwks_of(&["rsa-b"]));
    refetch(&server, &jwks).await;
    assert_eq!(refusal(&server, &signed_by_a).await, "Invalid token: the token's key is unknown");
    Client::connect(&token_url(&server, &signed_by_b)).await;

    // rsa-b replaced by rsa-a: a set of the same size, with another key.
    jwks.set(tokens::jwks_of(&["rsa-a"]));
    refetch(&server, &jwks).await;
    assert_eq!(refusal(&server, &signed_by_b).await, "Invalid token: the token's key is unknown");
    Client::connect(&token_url(&server, &signed_by_a)).await;
}

#[tokio::test]
async fn a_key_set_of_256_kib_is_taken_and_a_larger_one_is_refused() {
    // Trailing spaces keep the document valid JSON of exactly the size wanted.
    let document = |bytes: usize| {
        let keys = tokens::jwks_of(&["rsa-a"]);
        format!("{keys}{}", " ".repeat(bytes - keys.len()))
    };
    let token = tokens::rs256("rsa-a", &claims("carol", &["*"], 300, json!({})));
    let largest = JwksServer::start(document(MAX_JWKS_BYTES)).await;
    Client::connect(&token_url(&with_jwks(&largest), &token)).await;

    let oversized = JwksServer::start(document(MAX_JWKS_BYTES + 1)).await;
    let server = with_jwks(&oversized);
    assert_eq!(refusal(&server, &token).await, "Invalid token: the issuer's keys cannot be fetched");
}
