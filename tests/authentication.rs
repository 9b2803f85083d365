//! Identity and access through real sockets: connection tokens on the upgrade and in the first
//! frame, expiry and refresh, per-project and per-scope authorization, who asked in what reaches
//! the queues and the audit, JWKS keys and their rotation, the attacks a token check must stop
//! (forged, expired, `alg: none`, algorithm confusion, made-up key ids), and `Origin`.

pub mod common;

use std::time::{Duration, Instant};

use common::{
    tokens::{self, claims, hs256, JwksServer},
    Client, TestServer,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

fn with_secret() -> TestServer {
    TestServer::start(|config| config.access.jwt_secret = Some(tokens::SECRET.into()))
}

/// The HTTP status and JSON body of a refused upgrade.
async fn refused_upgrade(request: impl IntoClientRequest + Unpin) -> (u16, Value) {
    let refused = common::refused_upgrade(request).await;
    (refused.status, refused.body)
}

fn token_url(server: &TestServer, token: &str) -> String {
    server.ws_url(&format!("/ws?token={token}"))
}

#[tokio::test]
async fn a_token_on_the_upgrade_allows_its_projects_and_nothing_else() {
    let server = with_secret();
    let token = hs256(&claims("alice", &["acme-*"], 300, json!({})));
    let mut alice = Client::connect(&token_url(&server, &token)).await;
    let allowed = alice.request(json!({"action": "subscribe", "project_id": "acme-web", "request_id": 1})).await;
    assert_eq!(allowed["type"], "subscription_confirmed", "{allowed}");
    let refused = alice.request(json!({"action": "subscribe", "project_id": "globex", "request_id": 2})).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("globex"));
    // The same answer for a project nobody has ever used: a refusal tells nothing about existence.
    let unknown = alice.request(json!({"action": "subscribe", "project_id": "no-such-project"})).await;
    assert_eq!(unknown["code"], "forbidden");
    assert_eq!(
        unknown["message"].as_str().unwrap().replace("no-such-project", "P"),
        refused["message"].as_str().unwrap().replace("globex", "P")
    );

    // Nothing of a refused project is delivered.
    server.publish(json!({"project_id": "globex", "data": "secret plans"})).await;
    server.publish(json!({"project_id": "acme-web", "data": "hello"})).await;
    assert_eq!(alice.recv_type("message").await["data"], "hello");
    alice.expect_silence(Duration::from_millis(200)).await;

    // Authorization: Bearer works the same for non-browser clients.
    let mut request = server.ws_url("/ws?project_id=globex").into_client_request().unwrap();
    request.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    let (mut stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut frames = Vec::new();
    for _ in 0..2 {
        if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) =
            futures_util::StreamExt::next(&mut stream).await
        {
            frames.push(serde_json::from_str::<Value>(&text).unwrap());
        }
    }
    assert_eq!(frames[0]["type"], "connected");
    assert_eq!(frames[1]["code"], "forbidden", "?project_id= is authorized too: {}", frames[1]);
    assert_eq!(frames[1]["project_id"], "globex");
    assert_eq!(server.metric("agenticai_ws_authentications_total{via=\"upgrade\"}").await, 2.0);
}

#[tokio::test]
async fn forged_expired_unsigned_and_misaddressed_tokens_get_401_without_an_upgrade() {
    use base64::Engine as _;
    let server = TestServer::start(|config| {
        config.access.jwt_secret = Some(tokens::SECRET.into());
        config.access.jwt_issuer = Some("https://id.example".into());
        config.access.jwt_audience = Some("agenticai".into());
        config.access.jwt_leeway = Duration::ZERO;
    });
    let good = json!({"iss": "https://id.example", "aud": "agenticai"});
    let valid = hs256(&claims("alice", &["*"], 300, good.clone()));
    Client::connect(&token_url(&server, &valid)).await;

    let forged = tokens::hs256_with_secret(
        b"not-the-secret-but-just-as-long-as-it",
        &claims("alice", &["*"], 300, good.clone()),
    );
    let encode = |value: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let unsigned = format!(
        "{}.{}.",
        encode(&json!({"alg": "none", "typ": "JWT"})),
        encode(&claims("alice", &["*"], 300, good.clone()))
    );
    let cases = [
        ("forged", forged),
        ("expired", hs256(&claims("alice", &["*"], -30, good.clone()))),
        ("alg none", unsigned),
        (
            "wrong issuer",
            hs256(&claims("alice", &["*"], 300, json!({"iss": "https://evil.example", "aud": "agenticai"}))),
        ),
        ("wrong audience", hs256(&claims("alice", &["*"], 300, json!({"iss": "https://id.example", "aud": "other"})))),
        ("no sub", hs256(&json!({"exp": tokens::now() + 300, "iss": "https://id.example", "aud": "agenticai"}))),
        (
            "not yet valid",
            hs256(&claims(
                "alice",
                &["*"],
                300,
                json!({"iss": "https://id.example", "aud": "agenticai", "nbf": tokens::now() + 120}),
            )),
        ),
        ("garbage", "garbage".to_owned()),
    ];
    for (what, token) in cases {
        let (status, body) = refused_upgrade(token_url(&server, &token)).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(body["code"], "unauthorized", "{what}: {body}");
    }
    assert_eq!(server.metric("agenticai_ws_active_connections").await, 0.0);
    assert_eq!(server.metric("agenticai_ws_auth_failures_total{reason=\"bad_signature\"}").await, 1.0);
    assert_eq!(server.metric("agenticai_ws_auth_failures_total{reason=\"not_yet_valid\"}").await, 1.0);
    assert_eq!(server.metric("agenticai_ws_auth_failures_total{reason=\"expired\"}").await, 1.0);
}

#[tokio::test]
async fn without_a_token_a_connection_must_authenticate_first() {
    let server = TestServer::start(|config| {
        config.access.jwt_secret = Some(tokens::SECRET.into());
        config.access.auth_timeout = Duration::from_secs(1);
    });
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");
    for request in [
        json!({"action": "subscribe", "project_id": "acme-1"}),
        json!({"action": "forward", "type": "dev", "project_id": "acme-1", "data": {}}),
        json!({"action": "unsubscribe", "project_id": "acme-1"}),
    ] {
        let refused = client.request(request.clone()).await;
        assert_eq!(refused["code"], "unauthorized", "{request}: {refused}");
    }
    let token = hs256(&claims("bob", &["acme-*"], 600, json!({})));
    let authenticated = client.request(json!({"action": "authenticate", "token": token, "request_id": "a1"})).await;
    assert_eq!(authenticated["type"], "authenticated", "{authenticated}");
    assert_eq!(authenticated["user_id"], "bob");
    assert_eq!(authenticated["request_id"], "a1");
    let expires_at = authenticated["expires_at"].as_u64().unwrap();
    let refresh_at = authenticated["refresh_at"].as_u64().unwrap();
    assert!(refresh_at < expires_at && expires_at <= tokens::now() + 600);
    assert_eq!(
        client.request(json!({"action": "subscribe", "project_id": "acme-1"})).await["type"],
        "subscription_confirmed"
    );
    // Past the authentication timeout, the authenticated connection stays.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");

    // authenticate and subscribe pipelined: answered in order, the subscribe as authenticated.
    let mut eager = Client::connect(&server.ws_url("/ws")).await;
    let token = hs256(&claims("bob", &["acme-*"], 600, json!({})));
    eager.send(json!({"action": "authenticate", "token": token})).await;
    eager.send(json!({"action": "subscribe", "project_id": "acme-2"})).await;
    assert_eq!(eager.recv().await["type"], "authenticated");
    assert_eq!(eager.recv().await["type"], "subscription_confirmed");

    // One that never authenticates is closed with 3502.
    let mut idle = Client::connect(&server.ws_url("/ws")).await;
    let started = Instant::now();
    assert_eq!(idle.expect_close().await, 3502);
    assert!(started.elapsed() < Duration::from_secs(3));

    // A bad token in `authenticate`: unauthorized, then 3500.
    let mut liar = Client::connect(&server.ws_url("/ws")).await;
    let forged =
        tokens::hs256_with_secret(b"a-guessed-secret-of-32-bytes-or-more", &claims("bob", &["*"], 600, json!({})));
    let refused = liar.request(json!({"action": "authenticate", "token": forged})).await;
    assert_eq!(refused["code"], "unauthorized");
    assert_eq!(liar.expect_close().await, 3500);
    assert_eq!(server.metric("agenticai_ws_auth_failures_total{reason=\"timeout\"}").await, 1.0);
}

#[tokio::test]
async fn a_token_expires_unless_refreshed_for_the_same_user() {
    let server = TestServer::start(|config| {
        config.access.jwt_secret = Some(tokens::SECRET.into());
        config.access.jwt_leeway = Duration::ZERO;
    });
    // Not refreshed: closed with 3005 at exp.
    let mut lapsing = Client::connect(&token_url(&server, &hs256(&claims("carol", &["*"], 2, json!({}))))).await;
    let started = Instant::now();
    assert_eq!(lapsing.expect_close().await, 3005);
    assert!(started.elapsed() < Duration::from_secs(4), "closed after {:?}", started.elapsed());

    // Refreshed before exp: open past it, subscriptions kept, fewer projects end some of them.
    // Long enough for the round trips below on a loaded machine; the test then waits past it.
    let first_ttl = Duration::from_secs(5);
    let issued = Instant::now();
    let first = hs256(&claims("dave", &["a", "b"], first_ttl.as_secs() as i64, json!({})));
    let mut client = Client::connect(&token_url(&server, &first)).await;
    for project in ["a", "b"] {
        assert_eq!(
            client.request(json!({"action": "subscribe", "project_id": project})).await["type"],
            "subscription_confirmed"
        );
    }
    let other_user = hs256(&claims("mallory", &["*"], 600, json!({})));
    let refused = client.request(json!({"action": "authenticate", "token": other_user})).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let fresh = hs256(&claims("dave", &["a"], 600, json!({})));
    let refreshed = client.request(json!({"action": "authenticate", "token": fresh})).await;
    assert_eq!(refreshed["type"], "authenticated");
    assert_eq!(refreshed["user_id"], "dave");
    let ended = client.recv().await;
    assert_eq!(ended["code"], "forbidden", "{ended}");
    assert_eq!(ended["project_id"], "b");
    tokio::time::sleep_until((issued + first_ttl + Duration::from_millis(500)).into()).await;
    server.publish(json!({"project_id": "b", "data": "not for dave any more"})).await;
    server.publish(json!({"project_id": "a", "data": "still dave's"})).await;
    assert_eq!(client.recv_type("message").await["data"], "still dave's");
    client.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(server.metric("agenticai_ws_token_expiries_total").await, 1.0);
    assert_eq!(server.metric("agenticai_ws_authentications_total{via=\"refresh\"}").await, 1.0);
}

#[tokio::test]
async fn scopes_gate_forward_and_publish_and_who_asked_travels_with_the_work() {
    let server = TestServer::start(|config| {
        config.access.jwt_secret = Some(tokens::SECRET.into());
        config.access.publish_api_keys = vec!["service-key".into()];
    });
    let forwarder = hs256(&claims("erin", &["acme-*"], 600, json!({"scope": "forward"})));
    let mut erin = Client::connect(&token_url(&server, &forwarder)).await;
    let refused = erin.request(json!({"action": "subscribe", "project_id": "acme-1"})).await;
    assert_eq!(refused["code"], "forbidden", "no subscribe scope: {refused}");
    let elsewhere = erin
        .request(json!({"action": "forward", "type": "dev", "message_id": "m-out", "project_id": "globex", "data": {}}))
        .await;
    assert_eq!(elsewhere["code"], "forbidden");
    let spoofed = json!({"action": "forward", "type": "dev", "message_id": "m-in", "project_id": "acme-1", "user_id": "ceo", "data": {"task": "deploy"}});
    let confirmed = erin.request(spoofed).await;
    assert_eq!(confirmed["type"], "forward_confirmed", "{confirmed}");
    let spool = std::fs::read_to_string(server.data_dir.join("spool/dev.jsonl")).unwrap();
    assert!(!spool.contains("m-out"));
    let line: Value = serde_json::from_str(spool.lines().find(|line| line.contains("m-in")).unwrap()).unwrap();
    assert_eq!(line["body"]["user_id"], "erin", "the gateway's user id replaces the client's claim");
    assert_eq!(line["body"]["gateway"]["user_id"], "erin");
    assert_eq!(line["attributes"]["UserId"], "erin");

    let no_publish = erin.request(json!({"action": "publish", "project_id": "acme-1", "data": 1})).await;
    assert_eq!(no_publish["code"], "forbidden");
    let publisher = hs256(&claims("svc", &["acme-*"], 600, json!({"scope": "publish subscribe"})));
    let mut service = Client::connect(&token_url(&server, &publisher)).await;
    assert_eq!(
        service.request(json!({"action": "publish", "project_id": "acme-1", "data": 1})).await["type"],
        "publish_confirmed"
    );

    // The HTTP API: 401 without credentials, 403 with a token that does not allow it.
    let http = reqwest::Client::new();
    let publish = |token: Option<&str>, project: &str| {
        let mut request =
            http.post(server.http_url("/api/v1/publish")).json(&json!({"project_id": project, "data": 2}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        common::wire::send(request)
    };
    assert_eq!(publish(None, "acme-1").await.status(), 401);
    assert_eq!(publish(Some(&forwarder), "acme-1").await.status(), 403);
    assert_eq!(publish(Some(&publisher), "globex").await.status(), 403);
    assert_eq!(publish(Some(&publisher), "acme-1").await.status(), 200);
    assert_eq!(publish(Some("not-a-token"), "acme-1").await.status(), 401);
    let history = |token: &str, project: &str| {
        common::wire::send(
            http.get(server.http_url(&format!("/api/v1/projects/{project}/history"))).bearer_auth(token.to_owned()),
        )
    };
    assert_eq!(history(&publisher, "acme-1").await.status(), 200);
    assert_eq!(history(&publisher, "globex").await.status(), 403);

    // Connection, forward and publication records name the user.
    drop((erin, service));
    server.wait_for_metric("agenticai_ws_active_connections", 0.0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = std::fs::read_to_string(server.data_dir.join("records/records.jsonl")).unwrap_or_default();
        let named = |kind: &str, user: &str| {
            records.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).any(|record| {
                let item = record.get("item").unwrap_or(&record);
                item["kind"] == kind && item["user_id"] == user
            })
        };
        if named("forward", "erin") && named("publication", "svc") && named("connection", "erin") {
            break;
        }
        assert!(Instant::now() < deadline, "records without user ids: {records}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn jwks_keys_verify_rs256_and_es256_and_a_rotated_key_is_fetched() {
    let jwks = JwksServer::start(tokens::jwks_of(&["rsa-a", "ec-p256"])).await;
    let url = jwks.url.clone();
    let server = TestServer::start(move |config| config.access.jwt_jwks_url = Some(url));
    let rsa = tokens::rs256("rsa-a", &claims("frank", &["*"], 300, json!({})));
    let ec = tokens::es256(&claims("grace", &["*"], 300, json!({})));
    let mut frank = Client::connect(&token_url(&server, &rsa)).await;
    assert_eq!(
        frank.request(json!({"action": "subscribe", "project_id": "p"})).await["type"],
        "subscription_confirmed"
    );
    Client::connect(&token_url(&server, &ec)).await;

    // Algorithm confusion: an HMAC token keyed with the RSA public key is refused.
    let confused = tokens::hs256_with_public_key("rsa-a", &claims("frank", &["*"], 300, json!({})));
    assert_eq!(refused_upgrade(token_url(&server, &confused)).await.0, 401);

    // A key rotated in: a token naming it is accepted once the set is fetched again.
    let rotated = tokens::rs256("rsa-b", &claims("heidi", &["*"], 300, json!({})));
    jwks.set(tokens::jwks_of(&["rsa-a", "rsa-b", "ec-p256"]));
    tokio::time::sleep(Duration::from_millis(5200)).await;
    Client::connect(&token_url(&server, &rotated)).await;
}

#[tokio::test]
async fn a_flood_of_made_up_key_ids_costs_the_issuer_one_fetch() {
    let jwks = JwksServer::start(tokens::jwks_of(&["rsa-a"])).await;
    let url = jwks.url.clone();
    let server = TestServer::start(move |config| config.access.jwt_jwks_url = Some(url));
    let valid = tokens::rs256("rsa-a", &claims("ivan", &["*"], 300, json!({})));
    Client::connect(&token_url(&server, &valid)).await;
    let before = jwks.requests();
    for n in 0..40 {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(format!("made-up-{n}"));
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(
            &std::fs::read(format!("{}/tests/fixtures/rsa-b.pem", env!("CARGO_MANIFEST_DIR"))).unwrap(),
        )
        .unwrap();
        let token = jsonwebtoken::encode(&header, &claims("ivan", &["*"], 300, json!({})), &key).unwrap();
        assert_eq!(refused_upgrade(token_url(&server, &token)).await.0, 401);
    }
    assert!(jwks.requests() - before <= 1, "{} fetches for 40 unknown kids", jwks.requests() - before);
    assert!(server.metric("agenticai_ws_auth_failures_total{reason=\"unknown_key\"}").await >= 40.0);
}

#[tokio::test]
async fn only_listed_origins_may_open_connections_from_a_browser() {
    let server = TestServer::start(|config| {
        config.access.allowed_origins = vec!["https://dash.example.com".into(), "https://*.agents.example".into()];
    });
    let with_origin = |origin: &str| {
        let mut request = server.ws_url("/ws").into_client_request().unwrap();
        request.headers_mut().insert("Origin", HeaderValue::from_str(origin).unwrap());
        request
    };
    for origin in ["https://evil.example", "https://dash.example.com.evil.example", "null"] {
        let (status, body) = refused_upgrade(with_origin(origin)).await;
        assert_eq!(status, 403, "{origin}");
        assert_eq!(body["code"], "forbidden");
    }
    for origin in ["https://dash.example.com", "https://ci.agents.example"] {
        tokio_tungstenite::connect_async(with_origin(origin)).await.unwrap_or_else(|error| panic!("{origin}: {error}"));
    }
    // A client that sends no Origin (an agent, websocat) is not refused for it.
    Client::connect(&server.ws_url("/ws")).await;
}

/// While a first token waits on a key fetch, the frames pipelined behind `authenticate` are held
/// (at most 32, the rest answered `busy` at once) and handled, in order, once it is answered.
#[tokio::test]
async fn frames_pipelined_behind_a_pending_authenticate_are_held_then_handled_in_order() {
    let jwks = JwksServer::start_held(tokens::jwks_of(&["rsa-a"])).await;
    let url = jwks.url.clone();
    let server = TestServer::start(move |config| config.access.jwt_jwks_url = Some(url));
    let mut client = Client::connect(&server.ws_url("/ws")).await;
    let token = tokens::rs256("rsa-a", &claims("judy", &["acme-*"], 300, json!({})));
    client.send(json!({"action": "authenticate", "token": token, "request_id": "auth"})).await;
    client.send(json!({"action": "subscribe", "project_id": "acme-web", "request_id": "sub"})).await;
    for n in 0..31 {
        client.send(json!({"action": "ping", "request_id": n})).await;
    }
    client.send(json!({"action": "ping", "request_id": "one-too-many"})).await;
    let busy = client.recv().await;
    assert_eq!(busy["code"], "busy", "the 33rd frame behind a pending authenticate: {busy}");
    client.expect_silence(Duration::from_millis(300)).await;
    assert!(jwks.requests() >= 1, "the key fetch is pending");

    jwks.release();
    let authenticated = client.recv().await;
    assert_eq!(
        (authenticated["type"].as_str(), authenticated["request_id"].as_str()),
        (Some("authenticated"), Some("auth"))
    );
    // The hub confirms the subscription on its own turn, so it may come among the pongs.
    let (mut subscribed, mut pongs) = (Vec::new(), Vec::new());
    for _ in 0..32 {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("pong") => pongs.push(frame["request_id"].as_i64().expect("the ping's request_id")),
            _ => subscribed.push(frame),
        }
    }
    assert_eq!(subscribed.len(), 1, "{subscribed:?}");
    assert_eq!(subscribed[0]["type"], "subscription_confirmed", "the held subscribe ran with the identity");
    assert_eq!(subscribed[0]["request_id"], "sub");
    assert_eq!(pongs, (0..31).collect::<Vec<i64>>(), "the held pings, answered in order");
    client.expect_silence(Duration::from_millis(200)).await;
}

/// The gateway's own algorithm guard, not jsonwebtoken's key-family check: a JWKS `oct` key never
/// becomes an HMAC secret, and a key that names its algorithm verifies only tokens of that one.
#[tokio::test]
async fn a_jwks_symmetric_key_or_another_algorithm_of_the_family_is_refused_with_its_reason() {
    let secret = "c3ltbWV0cmljLWtleS10aGF0LWlzLWF0LWxlYXN0LTMyLWJ5dGVz";
    let mut rsa_rs256_only: Value = serde_json::from_str(&tokens::jwks_of(&["rsa-a"])).unwrap();
    rsa_rs256_only["keys"][0]["alg"] = json!("RS256");
    rsa_rs256_only["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "kid": "shared", "alg": "HS256", "k": secret}));
    let jwks = JwksServer::start(rsa_rs256_only.to_string()).await;
    let url = jwks.url.clone();
    let server = TestServer::start(move |config| config.access.jwt_jwks_url = Some(url));

    let accepted = tokens::rs256("rsa-a", &claims("kate", &["*"], 300, json!({})));
    Client::connect(&token_url(&server, &accepted)).await;

    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("shared".into());
    let k = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret).unwrap();
    let hmac = jsonwebtoken::encode(
        &header,
        &claims("kate", &["*"], 300, json!({})),
        &jsonwebtoken::EncodingKey::from_secret(&k).unwrap(),
    )
    .unwrap();
    let (status, body) = refused_upgrade(token_url(&server, &hmac)).await;
    assert_eq!(status, 401);
    assert_eq!(body["message"], "Invalid token: the token's key is unknown", "an oct key: {body}");

    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS512);
    header.kid = Some("rsa-a".into());
    let pem = std::fs::read(format!("{}/tests/fixtures/rsa-a.pem", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let rs512 = jsonwebtoken::encode(
        &header,
        &claims("kate", &["*"], 300, json!({})),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    let (status, body) = refused_upgrade(token_url(&server, &rs512)).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["message"], "Invalid token: the token's signature or algorithm is not accepted",
        "RS512 with a key that allows RS256 only: {body}"
    );
    assert_eq!(server.metric("agenticai_ws_auth_failures_total{reason=\"unknown_key\"}").await, 1.0);
    assert_eq!(server.metric("agenticai_ws_auth_failures_total{reason=\"bad_signature\"}").await, 1.0);
}
