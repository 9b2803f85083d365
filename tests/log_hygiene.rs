//! What a client or the configuration puts in the server's log cannot forge or leak (issue 22,
//! items 8b and 8d), read from the log of the server binary: a control character in a token's
//! `sub` cannot start a line of its own in the text format, and a password in JWT_JWKS_URL is
//! shown as `***`, as REDIS_URL's is.

pub mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::{
    tokens::{self, claims, hs256, JwksServer},
    ChildServer, Client,
};
use serde_json::json;

/// The server binary with `env`, logging at INFO in the text format to a file; the file.
async fn server_logging(env: &[(&str, String)]) -> (ChildServer, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().expect("a log file");
    let mut env = env.to_vec();
    env.extend([("RUST_LOG", "info".to_owned()), ("LOG_FORMAT", "text".to_owned())]);
    let stderr = Stdio::from(log.reopen().expect("the log file"));
    let server = ChildServer::spawn_with_output(&env, Stdio::null(), stderr).await;
    (server, log)
}

/// The log once it holds `expected` (the server writes it a moment after the event).
async fn log_holding(log: &tempfile::NamedTempFile, expected: &str) -> String {
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log.path()).expect("read the log");
        if text.contains(expected) {
            return text;
        }
        assert!(Instant::now() < deadline, "the log never held {expected:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_line_break_in_a_tokens_sub_cannot_forge_a_log_line() {
    let env = [("JWT_SECRET", tokens::SECRET.to_owned()), ("MAX_CONNECTIONS_PER_USER", "1".to_owned())];
    let (server, log) = server_logging(&env).await;
    let forged_line = "[2099-01-01T00:00:00Z ERROR agenticai_websocket::audit] the operator approved it";
    let sub = format!("mallory\n{forged_line}\r\u{1b}[2K");
    let token = hs256(&claims(&sub, &["p"], 300, json!({})));

    // A second connection of the same user is refused by name in the log (user_id = sub).
    let _first = Client::connect(&server.ws_url(&format!("/ws?token={token}"))).await;
    let mut second = Client::connect(&server.ws_url("/ws")).await;
    let answer = second.request(json!({"action": "authenticate", "token": token})).await;
    assert_eq!(answer["code"], "too_many_connections", "{answer}");
    assert_eq!(second.expect_close().await, 3504);

    let text = log_holding(&log, "MAX_CONNECTIONS_PER_USER").await;
    let forged = text.lines().filter(|line| line.starts_with("[2099-")).count();
    assert_eq!(forged, 0, "a client wrote a line of the log:\n{text}");
    assert!(!text.contains('\u{1b}') && !text.contains('\r'), "control characters reached the log:\n{text}");
    assert!(text.contains(&format!("mallory\\n{forged_line}\\r\\u{{1b}}[2K")), "the sub, escaped:\n{text}");
}

#[tokio::test]
async fn a_password_in_jwt_jwks_url_is_never_logged() {
    const PASSWORD: &str = "jwks-basic-auth-password";
    let jwks = JwksServer::start(tokens::jwks_of(&["rsa-a"])).await;
    let with_credentials = jwks.url.replacen("http://", &format!("http://gateway:{PASSWORD}@"), 1);
    let (_server, log) = server_logging(&[("JWT_JWKS_URL", with_credentials)]).await;
    let text = log_holding(&log, "JWKS loaded").await;
    assert!(text.contains("gateway:***@127.0.0.1"), "the URL, redacted:\n{text}");
    assert!(!text.contains(PASSWORD), "the password is in the log:\n{text}");

    // An issuer that cannot be reached: the failure's message names the URL too.
    let unreachable = format!("http://gateway:{PASSWORD}@127.0.0.1:{}/jwks.json", common::free_port());
    let (_server, log) = server_logging(&[("JWT_JWKS_URL", unreachable)]).await;
    let text = log_holding(&log, "cannot fetch the JWKS").await;
    assert!(!text.contains(PASSWORD), "the password is in the log:\n{text}");
}
