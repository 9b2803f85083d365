//! The gateway binary: parses the configuration (flags or environment), sets up logging and
//! runs [`agenticai_websocket::server`] until SIGTERM.

use std::process::ExitCode;

use agenticai_websocket::{config::Config, logging, server::Server};
use clap::{error::ContextKind, CommandFactory, Parser};

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) => {
            let _ = error.print();
            if let Some(variable) = environment_variable_of(&error) {
                eprintln!("(set by environment variable {variable})");
            }
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    logging::init(config.log_format);
    if let Err(error) = config.validate() {
        log::error!("invalid configuration: {error}");
        return ExitCode::from(2);
    }
    let result = actix_rt::System::new().block_on(async move { Server::bind(config).await?.run().await });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The environment variable behind the flag a parse error names, if the value came from it.
fn environment_variable_of(error: &clap::Error) -> Option<String> {
    let flag = error.get(ContextKind::InvalidArg)?.to_string();
    let long = flag.trim_start_matches("--").split([' ', '=']).next()?.to_owned();
    let command = Config::command();
    let argument = command.get_arguments().find(|argument| argument.get_long() == Some(long.as_str()))?;
    let variable = argument.get_env()?;
    std::env::var_os(variable).map(|_| variable.to_string_lossy().into_owned())
}
