//! The command line as an operator meets it: the tools beside the server (`token`,
//! `check-token`, `check-config`), listed by `--help` and `help`, their output and exit status.

pub mod common;

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

const SECRET: &str = "a-development-secret-of-32-bytes!";

/// Runs the binary with `args` and only the environment given (nothing of the test runner's),
/// `stdin` as its standard input.
fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agenticai-websocket"))
        .args(args)
        .env_clear()
        .env("DATA_DIR", data.path())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mint(args: &[&str], secret: &str) -> String {
    let mut argv = vec!["token"];
    argv.extend_from_slice(args);
    let output = run(&argv, &[("JWT_SECRET", secret)], "");
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout).trim().to_owned()
}

#[test]
fn help_lists_the_tools_and_help_is_a_command() {
    let help = run(&["--help"], &[], "");
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    for tool in ["token", "check-token", "check-config", "--jwt-secret <JWT_SECRET>"] {
        assert!(help.contains(tool), "--help lists {tool}: {help}");
    }
    let help_command = run(&["help"], &[], "");
    assert_eq!(help_command.status.code(), Some(0), "{}", text(&help_command.stderr));
    assert!(text(&help_command.stdout).contains("check-config"));
    let token_help = run(&["help", "token"], &[], "");
    assert_eq!(token_help.status.code(), Some(0));
    assert!(text(&token_help.stdout).contains("--sub <SUB>"), "{}", text(&token_help.stdout));
}

#[test]
fn token_keeps_its_flags_and_prints_only_the_token() {
    let token =
        mint(&["--sub", "alice", "--projects", "acme-*,beta", "--scope", "subscribe publish", "--ttl", "60"], SECRET);
    assert_eq!(token.split('.').count(), 3, "{token}");
    assert!(!token.contains(char::is_whitespace));
    let missing_secret = run(&["token", "--sub", "alice"], &[], "");
    assert_eq!(missing_secret.status.code(), Some(2));
    assert!(text(&missing_secret.stderr).starts_with("invalid configuration: JWT_SECRET"));
    let missing_sub = run(&["token"], &[("JWT_SECRET", SECRET)], "");
    assert_eq!(missing_sub.status.code(), Some(2));
    assert!(text(&missing_sub.stderr).contains("--sub <SUB>"), "{}", text(&missing_sub.stderr));
}

#[test]
fn check_token_prints_the_claims_of_a_good_token_and_never_the_token() {
    let token = mint(&["--sub", "alice", "--projects", "acme-*", "--info", r#"{"name":"Alice"}"#], SECRET);
    for (args, stdin) in [(vec!["check-token"], token.as_str()), (vec!["check-token", token.as_str()], "")] {
        let checked = run(&args, &[("JWT_SECRET", SECRET)], stdin);
        let (stdout, stderr) = (text(&checked.stdout), text(&checked.stderr));
        assert_eq!(checked.status.code(), Some(0), "{stderr}");
        let claims: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["projects"], serde_json::json!(["acme-*"]));
        assert_eq!(claims["info"]["name"], "Alice");
        assert!(!stdout.contains(&token) && !stderr.contains(&token));
    }
}

#[test]
fn check_token_refuses_what_the_server_refuses_with_exit_1() {
    let forged = mint(&["--sub", "mallory"], "another-secret-of-thirty-two-bytes!");
    let refused = run(&["check-token"], &[("JWT_SECRET", SECRET)], &forged);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused (bad_signature)"), "{stderr}");
    assert!(!stderr.contains(&forged) && refused.stdout.is_empty());

    let other_issuer = mint(&["--sub", "alice", "--issuer", "https://other.example"], SECRET);
    let refused =
        run(&["check-token"], &[("JWT_SECRET", SECRET), ("JWT_ISSUER", "https://issuer.example")], &other_issuer);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("wrong_issuer_or_audience"), "{}", text(&refused.stderr));

    let garbage = run(&["check-token", "not-a-jwt"], &[("JWT_SECRET", SECRET)], "");
    assert_eq!(garbage.status.code(), Some(1));
    assert!(text(&garbage.stderr).contains("malformed"));
}

/// With JWT_JWKS_URL the keys are fetched from the issuer, as the server fetches them.
#[tokio::test]
async fn check_token_verifies_against_the_issuers_key_set() {
    use common::tokens::{claims, jwks_of, rs256, JwksServer};
    let jwks = JwksServer::start(jwks_of(&["rsa-a"])).await;
    let signed = rs256("rsa-a", &claims("agent-7", &["acme-*"], 300, serde_json::json!({"scope": "publish"})));
    let unknown_kid = rs256("rsa-b", &claims("mallory", &["*"], 300, serde_json::json!({})));
    let url = jwks.url.clone();
    let (accepted, refused) = tokio::task::spawn_blocking(move || {
        let env = [("JWT_JWKS_URL", url.as_str())];
        (run(&["check-token"], &env, &signed), run(&["check-token"], &env, &unknown_kid))
    })
    .await
    .unwrap();
    assert_eq!(accepted.status.code(), Some(0), "{}", text(&accepted.stderr));
    let claims: serde_json::Value = serde_json::from_slice(&accepted.stdout).unwrap();
    assert_eq!((claims["sub"].as_str(), claims["scope"].as_str()), (Some("agent-7"), Some("publish")));
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("unknown_key"), "{}", text(&refused.stderr));
    assert!(jwks.requests() >= 1);
}

#[test]
fn check_token_without_keys_is_a_configuration_error() {
    let token = mint(&["--sub", "alice"], SECRET);
    let no_keys = run(&["check-token"], &[], &token);
    assert_eq!(no_keys.status.code(), Some(2));
    assert!(text(&no_keys.stderr).starts_with("invalid configuration: JWT_SECRET"), "{}", text(&no_keys.stderr));
    let short = run(&["check-token"], &[("JWT_SECRET", "too-short")], &token);
    assert_eq!(short.status.code(), Some(2));
    assert!(text(&short.stderr).starts_with("invalid configuration: JWT_SECRET"));
}

#[test]
fn check_config_prints_every_setting_with_secrets_redacted() {
    let checked = run(
        &["--port", "9000", "check-config"],
        &[
            ("JWT_SECRET", "hunter2-hunter2-hunter2-hunter2-hunter2"),
            ("REDIS_URL", "redis://:hunter2@cache:6379/0"),
            ("PUBLISH_API_KEYS", "hunter2-key,hunter2-other"),
            ("HISTORY_SIZE", "50"),
        ],
        "",
    );
    let stdout = text(&checked.stdout);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked.stderr));
    assert!(!stdout.contains("hunter2"), "a secret was printed: {stdout}");
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {stdout}"))
            .to_owned()
    };
    assert!(line("WEBSOCKET_PORT=9000").ends_with("# command line"));
    assert!(line("HISTORY_SIZE=50").ends_with("# environment"));
    assert!(line("MAX_FRAME_BYTES=262144").ends_with("# default"));
    assert!(line("REDIS_URL=redis://:***@cache:6379/0").ends_with("# environment"));
    line("JWT_SECRET=***");
    line("PUBLISH_API_KEYS=***");
    assert!(line("JWT_JWKS_URL=").ends_with("# unset"));

    let socket = run(&["check-config"], &[("REDIS_URL", "redis+unix:///run/redis.sock?db=2&pass=hunter2")], "");
    let stdout = text(&socket.stdout);
    assert_eq!(socket.status.code(), Some(0), "{}", text(&socket.stderr));
    assert!(stdout.contains("REDIS_URL=redis+unix:///run/redis.sock?db=2&pass=***"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

#[test]
fn check_config_exits_2_on_what_start_up_refuses() {
    let bad = run(&["check-config"], &[("WEBSOCKET_PORT", "eighty")], "");
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).starts_with("invalid configuration: WEBSOCKET_PORT"), "{}", text(&bad.stderr));
    let partial = run(&["check-config"], &[("SQS_QUEUE_URL_PM", "http://q/pm")], "");
    assert_eq!(partial.status.code(), Some(2));
    assert!(text(&partial.stderr).contains("SQS_QUEUE_URL_DEV"), "{}", text(&partial.stderr));
    assert!(partial.stdout.is_empty());
    // Zeros that would switch something off without a word.
    for variable in ["HISTORY_SIZE", "RECORD_TTL_DAYS"] {
        let zero = run(&["check-config"], &[(variable, "0")], "");
        let stderr = text(&zero.stderr);
        assert_eq!(zero.status.code(), Some(2), "{variable}: {stderr}");
        assert!(stderr.starts_with(&format!("invalid configuration: {variable}: ")), "{stderr}");
        assert!(stderr.trim_end().ends_with("must be greater than 0"), "{stderr}");
    }
}
