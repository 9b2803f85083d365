//! The gateway binary: parses the configuration (flags or environment), sets up logging and
//! runs [`agenticai_websocket::server`] until SIGTERM.
//!
//! Exit status: 0 after a drain, 2 for any invalid setting (`invalid configuration: VARIABLE:
//! reason` on stderr, before anything starts), 1 for a failure while starting or running.

use std::process::ExitCode;

use agenticai_websocket::{
    config::{self, Config},
    logging,
    server::Server,
};
use clap::Parser;

fn main() -> ExitCode {
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
    logging::init(config.log_format);
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
