//! Configuration: every setting is an environment variable with a default, and also a command-line
//! flag, so `agenticai-websocket --help` prints the whole table. A bad value stops start-up with
//! exit status 2 and `invalid configuration: VARIABLE: reason` ([`describe_parse_error`] for what
//! clap refuses, [`Config::validate`] for the rest).
//!
//! The names are flat (one environment variable per setting, as operators and the README know
//! them); the settings are grouped by the component that uses them, one file each, the way
//! linkerd2-proxy's `env.rs` reads flat names into a nested configuration:
//!
//! | group | file | used by |
//! |---|---|---|
//! | [`Config::server`] | [`server`] | the HTTP server: addresses, timeouts, workers, drain |
//! | [`Config::aws`] | [`aws`] | the AWS SDK: region, emulator endpoint |
//! | [`Config::queues`] | [`queues`] | the four agent queues and the updates queue |
//! | [`Config::engine`] | [`engine`] | the engine: Redis or memory, history, presence |
//! | [`Config::streams`] | [`streams`] | agent streams: rollup window, idle timeout, bounds |
//! | [`Config::storage`] | [`storage`] | the record store and the local spool |
//! | [`Config::access`] | [`access`] | the access policy: keys, tokens, origins, abuse limits |
//! | [`Config::connection`] | [`connection`] | each WebSocket session |
//! | [`Config::dispatcher`] | [`dispatcher`] | the queue dispatcher's batching |
//! | [`Config::telemetry`] | [`telemetry`] | logs and CloudWatch EMF |
//!
//! Clap parses each value into the type its use needs ([`values`]), so a bad one is refused
//! before anything reads it: durations into `Duration` (a number in the unit the variable's name
//! says, or with a unit of its own), counts that must not be 0 into `NonZero*`. Each group's
//! `validate` keeps what no single value can say (rules across its settings, URLs and origins);
//! [`Config::validate`] runs them and the one rule across groups (a writable DATA_DIR when a
//! local store is used).
//!
//! `--help` lists the settings in `HELP_ORDER`, the order they had before they were grouped
//! (the README's table follows it), not group by group.

mod access;
mod aws;
mod connection;
mod dispatcher;
mod engine;
mod queues;
mod server;
mod storage;
mod streams;
mod telemetry;
mod values;

use std::{ffi::OsStr, path::PathBuf};

use clap::{error::ContextKind, Arg, CommandFactory, Parser};

pub(crate) use self::values::parse_networks;
pub use self::{
    access::{AccessSettings, CONNECTION_FD_HEADROOM},
    aws::AwsSettings,
    connection::ConnectionSettings,
    dispatcher::DispatcherSettings,
    engine::EngineSettings,
    queues::{AgentQueueUrls, QueueSettings},
    server::ServerSettings,
    storage::StorageSettings,
    streams::StreamSettings,
    telemetry::{LogFormat, TelemetrySettings},
    values::{check_origin, redact_url},
};

/// The gateway's settings, by component. Field docs of the groups are the `--help` text.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "agenticai-websocket",
    version,
    about = "Real-time WebSocket gateway of the AgenticAI platform",
    long_about = "Real-time WebSocket gateway of the AgenticAI platform.\n\nEvery option is also read \
                  from the environment variable named beside it. With no AWS settings the server runs on \
                  its embedded local default: forwards are spooled to DATA_DIR/spool, records to \
                  DATA_DIR/records.\n\nDurations (the *_SECS, *_MS, *_SECONDS and *_DAYS settings) are a whole \
                  number in the unit their name says, or a number with a unit: 500ms, 30s, 5m, 2h, 7d, as long \
                  as it is a whole number of the setting's unit (PING_INTERVAL_SECS=2m, not 1500ms).",
    after_long_help = "Logging: RUST_LOG sets what is logged (default info): a level (error, warn, info, \
                       debug, trace, off), optionally per module, e.g. RUST_LOG=info,agenticai_websocket=debug. \
                       A RUST_LOG that does not parse, or that would silence the gateway's own logs without \
                       saying `off`, stops start-up. LOG_FORMAT picks text or JSON lines.",
    mut_args = in_help_order
)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerSettings,
    #[command(flatten)]
    pub aws: AwsSettings,
    #[command(flatten)]
    pub queues: QueueSettings,
    #[command(flatten)]
    pub engine: EngineSettings,
    #[command(flatten)]
    pub streams: StreamSettings,
    #[command(flatten)]
    pub storage: StorageSettings,
    #[command(flatten)]
    pub access: AccessSettings,
    #[command(flatten)]
    pub connection: ConnectionSettings,
    #[command(flatten)]
    pub dispatcher: DispatcherSettings,
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
}

/// Every setting (its field name) in the order `--help` lists it: by topic across groups, as
/// operators have read it so far. A setting missing here would be listed first
/// (`every_setting_has_its_place_in_the_help` keeps the list whole).
const HELP_ORDER: &[&str] = &[
    "host",
    "port",
    "internal_port",
    "aws_region",
    "aws_endpoint_url",
    "dynamodb_table_name",
    "sqs_queue_url_pm",
    "sqs_queue_url_dev",
    "sqs_queue_url_qa",
    "sqs_queue_url_ops",
    "sqs_queue_url_updates",
    "redis_url",
    "redis_cluster",
    "history_size",
    "history_ttl",
    "history_max_projects",
    "history_max_bytes",
    "history_max_total_bytes",
    "history_page_bytes",
    "data_dir",
    "spool_max_bytes",
    "records_max_bytes",
    "publish_api_keys",
    "jwt_secret",
    "jwt_jwks_url",
    "jwt_issuer",
    "jwt_audience",
    "jwt_leeway",
    "auth_timeout",
    "allow_anonymous",
    "allowed_origins",
    "cors_allowed_origins",
    "log_format",
    "ping_interval",
    "client_timeout",
    "send_timeout",
    "http_request_timeout",
    "max_frame_bytes",
    "outbound_queue_messages",
    "outbound_queue_bytes",
    "write_delay",
    "max_subscriptions_per_connection",
    "max_connections",
    "max_connections_per_user",
    "max_connections_per_ip",
    "trusted_proxies",
    "client_rate_per_second",
    "client_rate_burst",
    "client_rate_close_after",
    "service_rate_per_second",
    "service_rate_burst",
    "api_rate_per_second",
    "api_rate_burst",
    "max_project_id_bytes",
    "max_inflight_per_connection",
    "drain_window",
    "sqs_batch_linger",
    "sqs_max_batch_bytes",
    "forward_deadline",
    "dispatcher_max_pending",
    "persistence_buffer_records",
    "record_ttl",
    "emf_interval",
    "service_name",
    "workers",
    "presence",
    "presence_ttl",
    "stream_rollup",
    "stream_idle_timeout",
    "stream_cancel_grace",
    "stream_max_bytes",
    "stream_max_open_per_project",
    "stream_max_appends_per_sec",
];

/// Places a setting in `--help` by [`HELP_ORDER`] (clap would list them group by group).
fn in_help_order(arg: Arg) -> Arg {
    match HELP_ORDER.iter().position(|id| arg.get_id() == *id) {
        Some(position) => arg.display_order(position),
        None => arg,
    }
}

/// The configuration `matches` hold, as `agenticai-websocket check-config` prints it: one line
/// per setting in `--help` order, `VARIABLE=value` and where the value came from. Secrets (the
/// settings whose values `--help` hides) are redacted: a URL loses its password, anything else is
/// `***` whole.
pub fn describe_effective(matches: &clap::ArgMatches) -> String {
    let command = Config::command();
    let mut lines = Vec::with_capacity(HELP_ORDER.len());
    for id in HELP_ORDER {
        let Some(argument) = command.get_arguments().find(|argument| argument.get_id() == *id) else { continue };
        let name = argument.get_env().map_or_else(
            || format!("--{}", argument.get_long().unwrap_or(id)),
            |variable| variable.to_string_lossy().into_owned(),
        );
        let value = matches
            .get_raw(id)
            .map(|values| values.map(|value| value.to_string_lossy()).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let shown = if value.is_empty() || !argument.is_hide_env_values_set() {
            value
        } else if id.ends_with("_url") {
            redact_url(&value)
        } else {
            "***".to_owned()
        };
        let source = match matches.value_source(id) {
            Some(clap::parser::ValueSource::CommandLine) => "command line",
            Some(clap::parser::ValueSource::EnvVariable) => "environment",
            Some(clap::parser::ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        lines.push(format!("{:<56} # {source}", format!("{name}={shown}")));
    }
    lines.join("\n")
}

/// The message for a command line or environment clap refused: `VARIABLE: reason` when the
/// value came from the environment, `--flag: reason` when from the command line.
pub fn describe_parse_error(error: &clap::Error) -> String {
    describe_refusal(error, |variable| std::env::var_os(variable).is_some())
}

/// [`describe_parse_error`], given which variables are set (clap does not say where a value
/// came from; a flag's variable being set means it did).
fn describe_refusal(error: &clap::Error, is_set: impl Fn(&OsStr) -> bool) -> String {
    let rendered = error.to_string();
    // clap's first line, and the valid values it lists after it; not its usage and tips.
    let reason = rendered
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("error: ") || line.starts_with("[possible values"))
        .map(|line| line.trim_start_matches("error: "))
        .collect::<Vec<_>>()
        .join(" ");
    let Some(flag) = error.get(ContextKind::InvalidArg).map(ToString::to_string) else {
        return reason;
    };
    let long = long_name(&flag);
    let command = Config::command();
    let variable = command
        .get_arguments()
        .find(|argument| argument.get_long() == Some(long.as_str()))
        .and_then(|argument| argument.get_env())
        .filter(|variable| is_set(variable))
        .map(|variable| variable.to_string_lossy().into_owned());
    let reason = match &variable {
        // clap names the flag in its reason; the operator set the variable.
        Some(variable) => reason.replace(&format!("'{flag}'"), variable).replace(&flag, variable),
        None => reason,
    };
    format!("{}: {reason}", variable.unwrap_or(format!("--{long}")))
}

/// Whether clap refused one of the server's settings, rather than a tool's flag or a subcommand.
pub fn refuses_a_setting(error: &clap::Error) -> bool {
    error.get(ContextKind::InvalidArg).map(|flag| long_name(&flag.to_string())).is_some_and(|long| {
        Config::command().get_arguments().any(|argument| argument.get_long() == Some(long.as_str()))
    })
}

/// A flag's long name as clap shows it in an error: `port` for `--port <PORT>` or `--port=x`.
fn long_name(flag: &str) -> String {
    flag.trim_start_matches("--").split([' ', '=']).next().unwrap_or_default().to_owned()
}

/// Checks RUST_LOG: it must parse, and must not silence this server's own logs unless it says
/// `off` (a bare word such as `verbose` parses as a module name and would turn all else off).
pub fn check_log_filter(spec: &str) -> Result<(), String> {
    let filter = env_filter::Builder::new()
        .try_parse(spec)
        .map_err(|error| format!("{spec:?} is not a log filter ({error}); use a level (error, warn, info, debug, trace, off), optionally per module: info,agenticai_websocket=debug"))?
        .build();
    let own_errors = log::Metadata::builder().level(log::Level::Error).target(env!("CARGO_CRATE_NAME")).build();
    let says_off = spec.split([',', '=']).any(|part| part.trim().eq_ignore_ascii_case("off"));
    if !filter.enabled(&own_errors) && !says_off {
        return Err(format!(
            "{spec:?} turns off the gateway's own logs ({} only); add a default level, e.g. info,{spec}, or say off",
            spec.split(',').map(str::trim).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

/// A setting that parsed but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{variable}: {reason}")]
    Invalid { variable: &'static str, reason: String },
    #[error(
        "some but not all agent queue URLs are set; missing: {}. Set all four for SQS, or none for \
         the local spool",
        .missing.join(", ")
    )]
    PartialQueues { missing: Vec<&'static str> },
}

impl Config {
    /// Checks what clap cannot, group by group (clap has already refused values that do not
    /// parse, zeros and durations out of range), then what spans groups: the data directory
    /// must be writable when the table or the queues are local.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.connection.validate()?;
        self.access.validate()?;
        self.queues.validate()?;
        self.aws.validate()?;
        self.engine.validate()?;
        self.server.validate()?;
        if self.storage.table_name().is_none() || self.queues.agent_queue_urls()?.is_none() {
            values::check_writable_dir(&self.storage.data_dir)
                .map_err(|reason| ConfigError::Invalid { variable: "DATA_DIR", reason })?;
        }
        Ok(())
    }

    /// Configuration for tests and embedding: defaults, loopback, a free port, no AWS, whatever
    /// the environment says.
    pub fn local_defaults(data_dir: PathBuf) -> Self {
        let defaults = Config::parse_from(["agenticai-websocket"]);
        Config {
            server: ServerSettings { host: "127.0.0.1".into(), port: 0, internal_port: None, ..defaults.server },
            aws: AwsSettings { aws_endpoint_url: None, ..defaults.aws },
            queues: QueueSettings {
                sqs_queue_url_pm: None,
                sqs_queue_url_dev: None,
                sqs_queue_url_qa: None,
                sqs_queue_url_ops: None,
                sqs_queue_url_updates: None,
            },
            engine: EngineSettings { redis_url: None, ..defaults.engine },
            storage: StorageSettings { dynamodb_table_name: None, data_dir, ..defaults.storage },
            access: AccessSettings {
                publish_api_keys: Vec::new(),
                cors_allowed_origins: Vec::new(),
                jwt_secret: None,
                jwt_jwks_url: None,
                jwt_issuer: None,
                jwt_audience: None,
                allow_anonymous: false,
                allowed_origins: Vec::new(),
                trusted_proxies: Vec::new(),
                ..defaults.access
            },
            telemetry: TelemetrySettings { log_format: LogFormat::Text, ..defaults.telemetry },
            ..defaults
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        num::{NonZeroU32, NonZeroUsize},
        time::Duration,
    };

    use super::{
        values::{greater_than_zero, DurationSetting},
        *,
    };

    fn parse(args: &[&str]) -> Config {
        let mut argv = vec!["agenticai-websocket"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).expect("arguments parse")
    }

    /// What start-up prints for arguments clap refuses, had they come from the environment.
    fn refused(args: &[&str]) -> String {
        let mut argv = vec!["agenticai-websocket"];
        argv.extend_from_slice(args);
        let error = Config::try_parse_from(argv).expect_err("arguments are refused");
        describe_refusal(&error, |_| true)
    }

    #[test]
    fn partial_queue_urls_name_the_missing_ones() {
        let config = parse(&["--sqs-queue-url-pm", "http://q/pm", "--sqs-queue-url-qa", "http://q/qa"]);
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("SQS_QUEUE_URL_DEV"), "{message}");
        assert!(message.contains("SQS_QUEUE_URL_OPS"), "{message}");
        assert!(!message.contains("SQS_QUEUE_URL_PM"), "{message}");
    }

    /// Why the all-or-none rule is not clap's `requires_all`: clap counts an empty variable as
    /// set, the gateway as unset.
    #[test]
    fn an_empty_queue_url_counts_as_unset() {
        let data = tempfile::tempdir().unwrap();
        let data_dir = data.path().to_str().unwrap();
        let spool = parse(&["--sqs-queue-url-pm", "", "--data-dir", data_dir]);
        assert!(spool.validate().is_ok());
        assert_eq!(spool.queues.agent_queue_urls().unwrap(), None);
        let three = parse(&[
            "--sqs-queue-url-pm",
            "http://q/pm",
            "--sqs-queue-url-dev",
            "http://q/dev",
            "--sqs-queue-url-qa",
            "http://q/qa",
            "--sqs-queue-url-ops",
            "",
        ]);
        let message = three.validate().unwrap_err().to_string();
        assert!(message.contains("missing: SQS_QUEUE_URL_OPS."), "{message}");
    }

    #[test]
    fn timeout_must_exceed_ping_interval() {
        let config = parse(&["--ping-interval-secs", "30", "--client-timeout-secs", "30"]);
        let message = config.validate().unwrap_err().to_string();
        assert!(message.starts_with("CLIENT_TIMEOUT_SECS"), "{message}");
    }

    #[test]
    fn a_write_delay_over_a_second_is_rejected() {
        assert_eq!(parse(&["--write-delay-ms", "1000"]).connection.write_delay, Duration::from_secs(1));
        let message = refused(&["--write-delay-ms", "1001"]);
        assert!(message.starts_with("WRITE_DELAY_MS"), "{message}");
    }

    #[test]
    fn max_connections_defaults_to_the_open_files_limit_less_the_headroom() {
        let config = parse(&[]);
        assert_eq!(config.access.max_connections(65_536), 64_512);
        assert_eq!(config.access.max_connections(100), 1, "a tiny limit still admits one connection");
        assert_eq!(parse(&["--max-connections", "5000"]).access.max_connections(65_536), 5000);
    }

    #[test]
    fn the_internal_port_must_differ_from_the_public_one() {
        let data_dir = tempfile::tempdir().unwrap();
        let data_dir = data_dir.path().to_str().unwrap();
        let same = parse(&["--port", "8080", "--internal-port", "8080", "--data-dir", data_dir]);
        let message = same.validate().unwrap_err().to_string();
        assert!(message.starts_with("INTERNAL_PORT") && message.contains("8080"), "{message}");
        assert!(parse(&["--port", "8080", "--internal-port", "9090", "--data-dir", data_dir]).validate().is_ok());
        assert!(parse(&["--port", "0", "--internal-port", "0", "--data-dir", data_dir]).validate().is_ok());
    }

    #[test]
    fn trusted_proxies_must_be_cidrs_or_addresses() {
        let message = parse(&["--trusted-proxies", "10.0.0.0/16,the-vpc"]).validate().unwrap_err().to_string();
        assert!(message.starts_with("TRUSTED_PROXIES") && message.contains("the-vpc"), "{message}");
    }

    #[test]
    fn zero_limits_are_rejected_by_name() {
        assert!(refused(&["--max-frame-bytes", "0"]).starts_with("MAX_FRAME_BYTES"));
    }

    #[test]
    fn a_zero_duration_or_count_is_refused_by_clap_saying_why() {
        let message = refused(&["--ping-interval-secs", "0"]);
        assert!(message.starts_with("PING_INTERVAL_SECS") && message.ends_with("must be greater than 0"), "{message}");
        let message = refused(&["--client-rate-burst", "0"]);
        assert!(message.starts_with("CLIENT_RATE_BURST") && message.ends_with("must be greater than 0"), "{message}");
        let message = refused(&["--outbound-queue-bytes", "lots"]);
        assert!(message.starts_with("OUTBOUND_QUEUE_BYTES") && message.contains("invalid digit"), "{message}");
    }

    /// A zero that would silently switch something off is refused by name: no history means no
    /// resume, a TTL of 0 days expires every record as it is written.
    #[test]
    fn zeros_that_would_disable_something_silently_are_refused() {
        for (flag, variable) in [("--history-size", "HISTORY_SIZE"), ("--record-ttl-days", "RECORD_TTL_DAYS")] {
            let message = refused(&[flag, "0"]);
            assert!(message.starts_with(variable) && message.ends_with("must be greater than 0"), "{message}");
        }
        assert_eq!(parse(&["--history-size", "1"]).engine.history_size, 1);
        assert_eq!(parse(&["--record-ttl-days", "1"]).storage.record_ttl, Duration::from_secs(86_400));
    }

    #[test]
    fn zero_keeps_its_meaning_where_it_has_one() {
        let config = parse(&[
            "--max-connections",
            "0",
            "--client-rate-per-second",
            "0",
            "--emf-interval-secs",
            "0",
            "--write-delay-ms",
            "0",
            "--drain-seconds",
            "0",
            "--jwt-leeway-secs",
            "0",
        ]);
        assert_eq!(config.access.max_connections, 0);
        assert_eq!(config.access.client_rate_per_second, 0);
        assert!(config.telemetry.emf_interval.is_zero() && config.connection.write_delay.is_zero());
        assert!(config.server.drain_window.is_zero() && config.access.jwt_leeway.is_zero());
    }

    #[test]
    fn durations_are_a_number_in_the_named_unit_or_carry_their_own() {
        let seconds = DurationSetting::SECONDS;
        assert_eq!(seconds.parse("25"), Ok(Duration::from_secs(25)));
        assert_eq!(seconds.parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(seconds.parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(seconds.parse("3000ms"), Ok(Duration::from_secs(3)));
        assert_eq!(seconds.parse("0"), Ok(Duration::ZERO));
        assert_eq!(DurationSetting::MILLISECONDS.parse("20"), Ok(Duration::from_millis(20)));
        assert_eq!(DurationSetting::MILLISECONDS.parse("1s"), Ok(Duration::from_millis(1000)));
        assert_eq!(DurationSetting::DAYS.parse("30"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(DurationSetting::DAYS.parse("48h"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(seconds.parse(&u64::MAX.to_string()), Ok(Duration::from_secs(u64::MAX)));

        assert_eq!(seconds.parse("1500ms").unwrap_err(), "1500ms is not a whole number of seconds");
        assert_eq!(DurationSetting::DAYS.parse("36h").unwrap_err(), "36h is not a whole number of days");
        for garbage in ["", "soon", "-1", "1.5", "5 s", "5S", "s", "10sec"] {
            let reason = seconds.parse(garbage).unwrap_err();
            assert!(reason.contains("is not a duration") && reason.contains("30s"), "{garbage}: {reason}");
        }
        assert!(seconds.parse(&format!("{}d", u64::MAX)).unwrap_err().ends_with("is too long"));
        assert_eq!(seconds.positive().parse("0s").unwrap_err(), "must be greater than 0");
        assert_eq!(seconds.positive().parse("1"), Ok(Duration::from_secs(1)));
        let capped = DurationSetting::MILLISECONDS.at_most(Duration::from_secs(1), "too slow");
        assert_eq!(capped.parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(capped.parse("1001").unwrap_err(), "must be at most 1000 milliseconds: too slow");
    }

    #[test]
    fn duration_settings_read_their_unit_and_name_their_variable_when_refused() {
        let config = parse(&["--ping-interval-secs", "30s", "--sqs-batch-linger-ms", "5", "--record-ttl-days", "7"]);
        assert_eq!(config.connection.ping_interval, Duration::from_secs(30));
        assert_eq!(config.dispatcher.sqs_batch_linger, Duration::from_millis(5));
        assert_eq!(config.storage.record_ttl, Duration::from_secs(7 * 86_400));
        let defaults = parse(&[]);
        assert_eq!(
            (defaults.connection.client_timeout, defaults.server.drain_window),
            (Duration::from_secs(60), Duration::from_secs(10))
        );
        let message = refused(&["--forward-deadline-secs", "soon"]);
        assert!(message.starts_with("FORWARD_DEADLINE_SECS") && message.contains("not a duration"), "{message}");
    }

    #[test]
    fn counts_that_must_not_be_zero_parse_into_non_zero_types() {
        assert_eq!(greater_than_zero::<NonZeroUsize>("64"), Ok(NonZeroUsize::new(64).unwrap()));
        assert_eq!(greater_than_zero::<NonZeroU32>("0").unwrap_err(), "must be greater than 0");
        assert_eq!(greater_than_zero::<NonZeroU32>("00").unwrap_err(), "must be greater than 0");
        assert_eq!(greater_than_zero::<NonZeroUsize>("-1").unwrap_err(), "invalid digit found in string");
        assert_eq!(parse(&[]).connection.max_frame_bytes.get(), 256 * 1024);
    }

    #[test]
    fn urls_in_messages_lose_their_passwords() {
        assert_eq!(redact_url("redis://:hunter2@cache:6379/0"), "redis://:***@cache:6379/0");
        assert_eq!(redact_url("rediss://app:hunter2@cache"), "rediss://app:***@cache");
        assert_eq!(redact_url("redis://token@cache"), "redis://***@cache");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        // An `@` in the query is not userinfo; a password in the query is redacted all the same.
        assert_eq!(redact_url("redis://cache/0?password=x@y"), "redis://cache/0?password=***");
    }

    #[test]
    fn query_string_secrets_are_redacted_whatever_the_scheme() {
        assert_eq!(redact_url("redis+unix:///run/redis.sock?pass=SECRET"), "redis+unix:///run/redis.sock?pass=***");
        assert_eq!(
            redact_url("unix:///run/redis.sock?db=2&PASSWORD=SECRET"),
            "unix:///run/redis.sock?db=2&PASSWORD=***"
        );
        assert_eq!(
            redact_url("rediss://app:SECRET@cache:6380/1?protocol=resp3&token=SECRET"),
            "rediss://app:***@cache:6380/1?protocol=resp3&token=***"
        );
        assert_eq!(
            redact_url("https://issuer.example/jwks?X-Amz-Signature=SECRET&X-Amz-Expires=60"),
            "https://issuer.example/jwks?X-Amz-Signature=***&X-Amz-Expires=60"
        );
        // Nothing secret: shown exactly as given.
        assert_eq!(redact_url("redis+unix:///run/redis.sock?db=2"), "redis+unix:///run/redis.sock?db=2");
        assert_eq!(redact_url("https://issuer.example/a%20b?x=a+b"), "https://issuer.example/a%20b?x=a+b");
        // Not a URL: kept only up to where a password might start.
        assert_eq!(redact_url("redis://:SECRET@"), "redis://***");
        assert_eq!(redact_url("redis://cache:notaport?pass=SECRET"), "redis://***");
        assert_eq!(redact_url("localhost:6379"), "localhost:6379");
    }

    #[test]
    fn a_refused_jwks_url_is_shown_without_its_password() {
        let refused = parse(&["--jwt-jwks-url", "ftp://gateway:hunter2@issuer/jwks"]).validate().unwrap_err();
        let message = refused.to_string();
        assert!(message.starts_with("JWT_JWKS_URL") && message.contains("gateway:***@issuer"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn queue_urls_origins_and_hosts_are_checked() {
        let message = |args: &[&str]| parse(args).validate().unwrap_err().to_string();
        assert!(message(&["--sqs-queue-url-updates", "garbage"]).starts_with("SQS_QUEUE_URL_UPDATES"));
        assert!(message(&["--aws-endpoint-url", "ftp://moto"]).starts_with("AWS_ENDPOINT_URL"));
        assert!(message(&["--cors-allowed-origins", "notanorigin"]).starts_with("CORS_ALLOWED_ORIGINS"));
        assert!(message(&["--cors-allowed-origins", "https://a.example/path"]).starts_with("CORS_ALLOWED_ORIGINS"));
        assert!(message(&["--redis-url", "foo"]).starts_with("REDIS_URL"));
        assert!(message(&["--host", "no-such-host.invalid"]).starts_with("WEBSOCKET_HOST"));
        let data = tempfile::tempdir().unwrap();
        let data_dir = data.path().to_str().unwrap();
        let ok = parse(&[
            "--cors-allowed-origins",
            "https://a.example,http://localhost:3000",
            "--host",
            "localhost",
            "--data-dir",
            data_dir,
        ]);
        assert!(ok.validate().is_ok());
        assert!(ok.server.binds_loopback_only());
    }

    #[test]
    fn a_cluster_url_names_its_seeds_and_each_is_checked() {
        let seeds = "redis://:hunter2@a:7000, redis://:hunter2@b:7001";
        assert_eq!(parse(&["--redis-url", seeds]).engine.redis_seeds(), vec![seeds]);
        let cluster = parse(&["--redis-url", seeds, "--redis-cluster", "true"]);
        assert_eq!(cluster.engine.redis_seeds(), vec!["redis://:hunter2@a:7000", "redis://:hunter2@b:7001"]);
        let refused = parse(&["--redis-url", "redis://a:7000,foo", "--redis-cluster", "true"]).validate().unwrap_err();
        assert!(refused.to_string().starts_with("REDIS_URL"), "{refused}");
    }

    #[test]
    fn an_unwritable_data_dir_is_named() {
        let data = tempfile::tempdir().unwrap();
        let file = data.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let message = parse(&["--data-dir", file.to_str().unwrap()]).validate().unwrap_err().to_string();
        assert!(message.starts_with("DATA_DIR"), "{message}");
    }

    #[test]
    fn log_filters_must_parse_and_keep_the_gateways_own_logs() {
        for ok in
            ["info", "warn,actix_server=error", "agenticai_websocket=debug", "off", "info,agenticai_websocket=off"]
        {
            assert_eq!(check_log_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["verbose", "hyper=debug", "info,=x=y"] {
            assert!(check_log_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unparsable_values_name_the_variable() {
        let error = Config::try_parse_from(["agenticai-websocket", "--port", "eighty"]).unwrap_err();
        assert!(error.to_string().contains("--port"), "{error}");
    }

    #[test]
    fn every_setting_has_its_place_in_the_help() {
        let command = Config::command();
        let settings: std::collections::BTreeSet<&str> = command
            .get_arguments()
            .map(|argument| argument.get_id().as_str())
            .filter(|id| !matches!(*id, "help" | "version"))
            .collect();
        let placed: std::collections::BTreeSet<&str> = HELP_ORDER.iter().copied().collect();
        assert_eq!(placed.len(), HELP_ORDER.len(), "a setting is placed twice");
        assert_eq!(settings, placed);
    }

    #[test]
    fn the_help_lists_settings_in_their_order_not_by_group() {
        let mut command = Config::command();
        let help = command.render_long_help().to_string();
        let flags: Vec<String> = HELP_ORDER
            .iter()
            .map(|id| {
                let argument = command.get_arguments().find(|argument| argument.get_id() == *id).unwrap();
                format!("--{} <", argument.get_long().unwrap())
            })
            .collect();
        let positions: Vec<usize> =
            flags.iter().map(|flag| help.find(flag.as_str()).unwrap_or_else(|| panic!("{flag} in the help"))).collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{flags:?} at {positions:?}");
    }
}
