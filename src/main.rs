//! The gateway binary: parses the configuration (flags or environment), sets up logging and
//! runs [`agenticai_websocket::server`] until SIGTERM.
//!
//! Exit status: 0 after a drain, 2 for any invalid setting (`invalid configuration: VARIABLE:
//! reason` on stderr, before anything starts), 1 for a failure while starting or running.
//!
//! `agenticai-websocket token --sub alice --projects 'acme-*' --ttl 3600` prints a development
//! token signed with JWT_SECRET instead (see [`MintCommand`]).

use std::process::ExitCode;

use agenticai_websocket::{
    config::{self, Config},
    logging,
    server::Server,
};
use agenticai_websocket::{mint_hs256, MintedClaims};
use clap::Parser;

/// Prints a connection token signed (HS256) with JWT_SECRET, for development and tests.
#[derive(Parser)]
#[command(name = "agenticai-websocket token")]
struct MintCommand {
    /// The user id (`sub`).
    #[arg(long)]
    sub: String,
    /// Projects the token allows, comma separated (`acme-*` matches by prefix, `*` all).
    #[arg(long, value_delimiter = ',')]
    projects: Vec<String>,
    /// Space-separated scopes (subscribe, forward, publish, admin); absent: subscribe forward.
    #[arg(long)]
    scope: Option<String>,
    /// Seconds until it expires.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// `iss`, when JWT_ISSUER is set on the server.
    #[arg(long, env = "JWT_ISSUER")]
    issuer: Option<String>,
    /// `aud`, when JWT_AUDIENCE is set on the server.
    #[arg(long, env = "JWT_AUDIENCE")]
    audience: Option<String>,
    /// The `info` claim (JSON), e.g. '{"name":"Alice"}'.
    #[arg(long)]
    info: Option<String>,
}

fn mint(args: impl Iterator<Item = String>) -> ExitCode {
    let command = match MintCommand::try_parse_from(args) {
        Ok(command) => command,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    let Some(secret) = std::env::var("JWT_SECRET").ok().filter(|secret| !secret.is_empty()) else {
        return invalid("JWT_SECRET: set it to the server's secret to sign a token");
    };
    let info = match command.info.as_deref().map(serde_json::from_str).transpose() {
        Ok(info) => info,
        Err(error) => return invalid(&format!("--info: not JSON: {error}")),
    };
    let now = jsonwebtoken::get_current_timestamp();
    let claims = MintedClaims {
        sub: command.sub,
        exp: now + command.ttl,
        iat: now,
        projects: command.projects,
        scope: command.scope,
        iss: command.issuer,
        aud: command.audience,
        info,
    };
    match mint_hs256(&claims, secret.as_bytes()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot sign the token: {error}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("token") {
        return mint(std::env::args().skip(1));
    }
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => return invalid(&config::describe_parse_error(&error)),
    };
    if let Some(spec) = std::env::var("RUST_LOG").ok().filter(|spec| !spec.trim().is_empty()) {
        if let Err(reason) = config::check_log_filter(&spec) {
            return invalid(&format!("RUST_LOG: {reason}"));
        }
    }
    if let Err(error) = config.validate() {
        return invalid(&error.to_string());
    }
    logging::init(config.telemetry.log_format);
    let result = actix_rt::System::new().block_on(async move { Server::bind(config).await?.run().await });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reports a bad setting the same way whatever found it: on stderr (the logger may not be set
/// up, and a bad LOG_FORMAT or RUST_LOG is among what it reports), exit status 2.
fn invalid(message: &str) -> ExitCode {
    eprintln!("invalid configuration: {message}");
    ExitCode::from(2)
}
