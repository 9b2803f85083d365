//! The gateway binary: parses the command line (flags or environment), sets up logging and
//! runs [`agenticai_websocket::server`] until SIGTERM; or, given a subcommand, one of the tools
//! beside the server:
//!
//! - `token --sub alice --projects 'acme-*' --ttl 3600` prints a development token signed with
//!   JWT_SECRET ([`MintCommand`]);
//! - `check-token` verifies a token against the configured keys and prints its claims
//!   ([`CheckTokenCommand`]);
//! - `check-config` validates the configuration and prints it, secrets redacted.
//!
//! Exit status: 0 after a drain (or a tool's success), 2 for any invalid setting (`invalid
//! configuration: VARIABLE: reason` on stderr, before anything starts), 1 for a failure while
//! starting or running, or a token `check-token` refuses.

use std::{
    io::{Read, Write},
    process::ExitCode,
};

use agenticai_websocket::{
    check_token,
    config::{self, Config},
    logging, mint_hs256,
    server::Server,
    MintedClaims, TokenCheckError,
};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

// The command line: the server's settings, and a tool to run instead of the server. (A plain
// comment: a doc comment would replace the server's description that `Config` gives `--help`.)
#[derive(Parser)]
#[command(name = "agenticai-websocket", subcommand_help_heading = "Tools (instead of the server)")]
struct CommandLine {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    tool: Option<Tool>,
}

#[derive(Subcommand)]
enum Tool {
    /// Print a connection token signed (HS256) with JWT_SECRET, for development and tests.
    Token(MintCommand),
    /// Verify a token against the configured keys (JWT_SECRET or JWT_JWKS_URL, JWT_ISSUER,
    /// JWT_AUDIENCE, JWT_LEEWAY_SECS) and print its claims; exit 1 when the gateway would refuse
    /// it.
    CheckToken(CheckTokenCommand),
    /// Validate the configuration as start-up does (exit 2 when it would refuse it) and print
    /// every setting's effective value, secrets redacted.
    CheckConfig,
}

/// Prints a connection token signed (HS256) with JWT_SECRET, for development and tests.
#[derive(clap::Args)]
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

/// Verifies a token as the server would; the token itself is never printed.
#[derive(clap::Args)]
struct CheckTokenCommand {
    /// The token; absent or `-`: read from standard input (which keeps it out of the process
    /// list and the shell history).
    token: Option<String>,
}

fn main() -> ExitCode {
    let matches = match CommandLine::command().try_get_matches() {
        Ok(matches) => matches,
        Err(error) => return refused_command_line(&error),
    };
    let command_line = match CommandLine::from_arg_matches(&matches) {
        Ok(command_line) => command_line,
        Err(error) => return refused_command_line(&error),
    };
    let config = command_line.config;
    match command_line.tool {
        Some(Tool::Token(command)) => mint(command),
        Some(Tool::CheckToken(command)) => check(&config, command),
        Some(Tool::CheckConfig) => match validate(&config) {
            Ok(()) => print(&config::describe_effective(&matches)),
            Err(exit) => exit,
        },
        None => serve(config),
    }
}

/// What clap refused: a server setting the way start-up reports any bad setting, anything else
/// (a tool's flags, an unknown subcommand, `--help`) as clap prints it.
fn refused_command_line(error: &clap::Error) -> ExitCode {
    if config::refuses_a_setting(error) {
        return invalid(&config::describe_parse_error(error));
    }
    let _ = error.print();
    ExitCode::from(if error.use_stderr() { 2 } else { 0 })
}

/// Checks what clap cannot: RUST_LOG, and the rules [`Config::validate`] keeps.
fn validate(config: &Config) -> Result<(), ExitCode> {
    if let Some(spec) = std::env::var("RUST_LOG").ok().filter(|spec| !spec.trim().is_empty()) {
        config::check_log_filter(&spec).map_err(|reason| invalid(&format!("RUST_LOG: {reason}")))?;
    }
    config.validate().map_err(|error| invalid(&error.to_string()))
}

fn serve(config: Config) -> ExitCode {
    if let Err(exit) = validate(&config) {
        return exit;
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

fn mint(command: MintCommand) -> ExitCode {
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

fn check(config: &Config, command: CheckTokenCommand) -> ExitCode {
    // Against keys the server would refuse to start with, no answer would be meaningful.
    if let Err(exit) = validate(config) {
        return exit;
    }
    let token = match command.token.filter(|token| token != "-") {
        Some(token) => token,
        None => {
            let mut token = String::new();
            if let Err(error) = std::io::stdin().read_to_string(&mut token) {
                eprintln!("cannot read the token from standard input: {error}");
                return ExitCode::FAILURE;
            }
            token
        }
    };
    // A JWKS is fetched with the same async client the server uses.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime that fetches the keys: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(check_token(&config.access, token.trim())) {
        Ok(claims) => print(&serde_json::to_string_pretty(&claims).unwrap_or_else(|_| claims.to_string())),
        Err(error @ (TokenCheckError::NoKeys | TokenCheckError::Unusable(_))) => invalid(&error.to_string()),
        Err(error @ TokenCheckError::Refused { .. }) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// A tool's output on stdout. A reader that went away (`| head`) is not a failure of the tool.
fn print(output: &str) -> ExitCode {
    let _ = writeln!(std::io::stdout().lock(), "{output}");
    ExitCode::SUCCESS
}

/// Reports a bad setting the same way whatever found it: on stderr (the logger may not be set
/// up, and a bad LOG_FORMAT or RUST_LOG is among what it reports), exit status 2.
fn invalid(message: &str) -> ExitCode {
    eprintln!("invalid configuration: {message}");
    ExitCode::from(2)
}
