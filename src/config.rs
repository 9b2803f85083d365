//! Configuration: every setting is an environment variable with a default, and also a command-line
//! flag, so `agenticai-websocket --help` prints the whole table. A bad value stops start-up with
//! exit status 2 and `invalid configuration: VARIABLE: reason` ([`describe_parse_error`] for what
//! clap refuses, [`Config::validate`] for the rest).
//!
//! Clap parses each value into the type its use needs, so a bad one is refused before anything
//! reads it: durations into `Duration` (a number in the unit the variable's name says, or with a
//! unit of its own), counts that must not be 0 into `NonZero*`. `validate` keeps what no single
//! value can say: rules across settings, URLs and origins, and what the machine must provide
//! (a resolvable host, a writable DATA_DIR).

use std::{
    ffi::OsStr,
    net::{SocketAddr, ToSocketAddrs},
    num::{IntErrorKind, NonZeroU32, NonZeroU64, NonZeroUsize, ParseIntError},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use clap::{builder::TypedValueParser, error::ContextKind, CommandFactory, Parser, ValueEnum};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Readable text for a terminal.
    Text,
    /// One JSON object per line, for CloudWatch Logs.
    Json,
}

/// The gateway's settings. Field docs are the `--help` text.
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
                       saying `off`, stops start-up. LOG_FORMAT picks text or JSON lines."
)]
pub struct Config {
    /// Address or host name to bind (`localhost` binds its loopback addresses).
    #[arg(long, env = "WEBSOCKET_HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to bind (0 picks a free one).
    #[arg(long, env = "WEBSOCKET_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Port of the operator endpoints (/metrics, /status, /api/v1/stats) on WEBSOCKET_HOST, for
    /// a network only operators reach: served there without a key, they answer 404 on
    /// WEBSOCKET_PORT, and that port serves nothing else (0 picks a free one). Unset: they are
    /// served on WEBSOCKET_PORT.
    #[arg(long, env = "INTERNAL_PORT")]
    pub internal_port: Option<u16>,

    /// AWS region of the queues and the table.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,

    /// Endpoint of an AWS emulator (moto, fauxqs) for SQS and DynamoDB; unset = real AWS.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,

    /// DynamoDB table for connection and audit records; unset = local record store in DATA_DIR.
    #[arg(long, env = "DYNAMODB_TABLE_NAME")]
    pub dynamodb_table_name: Option<String>,

    /// SQS queue URL of the PM agent (all four agent queue URLs or none).
    #[arg(long, env = "SQS_QUEUE_URL_PM")]
    pub sqs_queue_url_pm: Option<String>,

    /// SQS queue URL of the Dev agent.
    #[arg(long, env = "SQS_QUEUE_URL_DEV")]
    pub sqs_queue_url_dev: Option<String>,

    /// SQS queue URL of the QA agent.
    #[arg(long, env = "SQS_QUEUE_URL_QA")]
    pub sqs_queue_url_qa: Option<String>,

    /// SQS queue URL of the Ops agent.
    #[arg(long, env = "SQS_QUEUE_URL_OPS")]
    pub sqs_queue_url_ops: Option<String>,

    /// Queue of agent updates to publish to their projects (long-polled by every task); unset =
    /// no updates consumer.
    #[arg(long, env = "SQS_QUEUE_URL_UPDATES")]
    pub sqs_queue_url_updates: Option<String>,

    /// Redis (ElastiCache for Valkey/Redis) for cross-task fan-out and history; unset = single
    /// task, history in memory.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Publications each project's history keeps (for resume and GET .../history).
    #[arg(long, env = "HISTORY_SIZE", default_value_t = 1000)]
    pub history_size: usize,

    /// Seconds without a publication after which a project's history is forgotten (its epoch
    /// then changes).
    #[arg(
        long = "history-ttl-secs",
        value_name = "HISTORY_TTL_SECS",
        env = "HISTORY_TTL_SECS",
        default_value = "3600",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub history_ttl: Duration,

    /// Projects whose history the in-memory store keeps (single-task mode); the least recently
    /// published are forgotten first.
    #[arg(
        long,
        env = "HISTORY_MAX_PROJECTS",
        default_value = "10000",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub history_max_projects: NonZeroUsize,

    /// Bytes of publications each project's history keeps (with HISTORY_SIZE, whichever is
    /// reached first); the oldest go first, the newest is always kept.
    #[arg(long, env = "HISTORY_MAX_BYTES", default_value = "8388608", value_parser = greater_than_zero::<NonZeroUsize>)]
    pub history_max_bytes: NonZeroUsize,

    /// Bytes of publications the in-memory store keeps across all projects (single-task mode);
    /// past it, the retained publications of the least recently published projects are dropped.
    #[arg(
        long,
        env = "HISTORY_MAX_TOTAL_BYTES",
        default_value = "268435456",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub history_max_total_bytes: NonZeroUsize,

    /// Bytes of publications one history answer carries at most (at least one publication): a
    /// GET .../history page (its `next_since` says where the next starts), and each page a
    /// resume's replay reads (at most half of OUTBOUND_QUEUE_BYTES).
    #[arg(long, env = "HISTORY_PAGE_BYTES", default_value = "1048576", value_parser = greater_than_zero::<NonZeroUsize>)]
    pub history_page_bytes: NonZeroUsize,

    /// Directory of the local spool and record store used when AWS is not configured.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Bytes the local spool's four files (DATA_DIR/spool) may hold together; past it forwards
    /// are refused with `forward_failed` until an operator empties the spool.
    #[arg(long, env = "SPOOL_MAX_BYTES", default_value = "1073741824", value_parser = greater_than_zero::<NonZeroU64>)]
    pub spool_max_bytes: NonZeroU64,

    /// API keys accepted by the publish API (comma separated, sent as `Authorization: Bearer KEY`).
    /// With none, publishing is open only when the server binds to loopback.
    #[arg(long, env = "PUBLISH_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub publish_api_keys: Vec<String>,

    /// HMAC secret (at least 32 bytes) that connection tokens (JWT, HS256/384/512) are signed
    /// with. In AWS it comes from Secrets Manager. Setting it (or JWT_JWKS_URL) makes every
    /// connection authenticate.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// JWKS endpoint of the token issuer (RS256/384/512, ES256/384, EdDSA); keys are cached and
    /// refreshed. Instead of JWT_SECRET. A password in it is never shown (`***`).
    #[arg(long, env = "JWT_JWKS_URL", hide_env_values = true)]
    pub jwt_jwks_url: Option<String>,

    /// Required `iss` of tokens, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of tokens, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Seconds of clock skew allowed for `exp` and `nbf`.
    #[arg(
        long = "jwt-leeway-secs",
        value_name = "JWT_LEEWAY_SECS",
        env = "JWT_LEEWAY_SECS",
        default_value = "5",
        value_parser = DurationSetting::SECONDS
    )]
    pub jwt_leeway: Duration,

    /// Seconds a connection without a token may take to send `authenticate` before it is closed
    /// with 3502 (when tokens are required).
    #[arg(
        long = "auth-timeout-secs",
        value_name = "AUTH_TIMEOUT_SECS",
        env = "AUTH_TIMEOUT_SECS",
        default_value = "10",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub auth_timeout: Duration,

    /// Without JWT_SECRET or JWT_JWKS_URL, accept anonymous connections from any address, not
    /// only from loopback (protected mode is the default).
    #[arg(long, env = "ALLOW_ANONYMOUS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_anonymous: bool,

    /// Origins allowed to open WebSocket connections from a browser, comma separated exact
    /// origins or patterns like https://*.example.com. Unset = any origin. An upgrade without
    /// `Origin` (a non-browser client) is never refused for it.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Origins allowed to call the HTTP API (publish, history, audit) from a browser, comma
    /// separated (e.g. https://dashboard.example.com). Unset = no cross-origin calls. WebSocket
    /// upgrades are not affected.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Seconds between protocol-level pings (below the ALB's idle timeout).
    #[arg(
        long = "ping-interval-secs",
        value_name = "PING_INTERVAL_SECS",
        env = "PING_INTERVAL_SECS",
        default_value = "25",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub ping_interval: Duration,

    /// Seconds of silence after which a peer is closed.
    #[arg(
        long = "client-timeout-secs",
        value_name = "CLIENT_TIMEOUT_SECS",
        env = "CLIENT_TIMEOUT_SECS",
        default_value = "60",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub client_timeout: Duration,

    /// Seconds data sent to a client may stay unacknowledged (it stopped reading, or its network
    /// is gone) before the kernel drops the connection (TCP_USER_TIMEOUT). Without it a client
    /// that never reads would keep its socket, and megabytes of kernel send buffer, for ever.
    #[arg(
        long = "send-timeout-secs",
        value_name = "SEND_TIMEOUT_SECS",
        env = "SEND_TIMEOUT_SECS",
        default_value = "60",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub send_timeout: Duration,

    /// Seconds an HTTP request (its head, then its body) may take to arrive, WebSocket upgrades
    /// included. A slower client gets 408 and its connection is closed, so sockets trickling a
    /// byte at a time hold nothing for long.
    #[arg(
        long = "http-request-timeout-secs",
        value_name = "HTTP_REQUEST_TIMEOUT_SECS",
        env = "HTTP_REQUEST_TIMEOUT_SECS",
        default_value = "5",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub http_request_timeout: Duration,

    /// Largest client frame accepted, in bytes; larger frames close the connection with 1009.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value = "262144", value_parser = greater_than_zero::<NonZeroUsize>)]
    pub max_frame_bytes: NonZeroUsize,

    /// Messages a connection's outbound queue may hold before the client is closed as slow (3008).
    #[arg(
        long,
        env = "OUTBOUND_QUEUE_MESSAGES",
        default_value = "1024",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub outbound_queue_messages: NonZeroUsize,

    /// Bytes a connection's outbound queue may hold before the client is closed as slow (3008).
    #[arg(
        long,
        env = "OUTBOUND_QUEUE_BYTES",
        default_value = "1048576",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub outbound_queue_bytes: NonZeroUsize,

    /// Milliseconds the first frame queued for a connection waits for more to share its write
    /// (0 = written at once). Clients that receive many frames per second then cost less CPU per
    /// delivery (fewer, larger writes), at the price of up to this much added latency. The same
    /// trade as Centrifugo's `client.write_delay`; at most 1000.
    #[arg(
        long = "write-delay-ms",
        value_name = "WRITE_DELAY_MS",
        env = "WRITE_DELAY_MS",
        default_value = "0",
        value_parser = DurationSetting::MILLISECONDS.at_most(MAX_WRITE_DELAY, "a longer delay only stalls clients")
    )]
    pub write_delay: Duration,

    /// Projects one connection may subscribe to.
    #[arg(
        long,
        env = "MAX_SUBSCRIPTIONS_PER_CONNECTION",
        default_value = "100",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub max_subscriptions_per_connection: NonZeroUsize,

    /// WebSocket connections this task holds at most; one more is refused with HTTP 503 and
    /// `Retry-After` before it costs any memory (another task, or the autoscaler, takes it).
    /// 0 = what the open-files limit allows, less CONNECTION_FD_HEADROOM for AWS, Redis and
    /// HTTP sockets (the soft limit is raised to the hard one at start-up).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Connections one user (a token's `sub`) may hold on this task; one more gets HTTP 429 (a
    /// token on the upgrade) or `too_many_connections` and close 3504 (in `authenticate`).
    /// 0 = no limit.
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", default_value_t = 100)]
    pub max_connections_per_user: usize,

    /// Connections one client address may hold on this task; one more gets HTTP 429. The
    /// address is the TCP peer, or behind a proxy in TRUSTED_PROXIES the one it forwarded.
    /// It caps apart one peer's (not a trusted proxy's) TCP connections that are not WebSockets:
    /// in their request, or kept alive between requests; one more is closed at the accept.
    /// 0 = no limit (a load test from one machine needs that).
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,

    /// Proxies whose X-Forwarded-For entries name the client (comma separated CIDRs or
    /// addresses; behind the ALB, the VPC range). Entries a client wrote itself are never
    /// trusted. Unset: the TCP peer is the client.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Requests (frames) a second one client connection may send on average; over the budget a
    /// frame is not executed and gets `rate_limited` with `retry_after_ms`. 0 = no limit.
    #[arg(long, env = "CLIENT_RATE_PER_SECOND", default_value_t = 100)]
    pub client_rate_per_second: u32,

    /// Requests a client connection may send at once above its rate (the token bucket's size).
    #[arg(long, env = "CLIENT_RATE_BURST", default_value = "200", value_parser = greater_than_zero::<NonZeroU32>)]
    pub client_rate_burst: NonZeroU32,

    /// Refusals in a row after which a connection that keeps sending over its budget is closed
    /// with 3509. 0 = never close.
    #[arg(long, env = "CLIENT_RATE_CLOSE_AFTER", default_value_t = 100)]
    pub client_rate_close_after: u32,

    /// Requests a second of a service connection: one that presented a publish key or a token
    /// with the `publish` scope (or any connection while publishing is open on loopback).
    /// 0 = no limit.
    #[arg(long, env = "SERVICE_RATE_PER_SECOND", default_value_t = 10_000)]
    pub service_rate_per_second: u32,

    /// Burst of a service connection's budget.
    #[arg(long, env = "SERVICE_RATE_BURST", default_value = "20000", value_parser = greater_than_zero::<NonZeroU32>)]
    pub service_rate_burst: NonZeroU32,

    /// Publishes a second over HTTP per API key (or per user, with a token); over it HTTP 429
    /// with `Retry-After`. 0 = no limit.
    #[arg(long, env = "API_RATE_PER_SECOND", default_value_t = 1000)]
    pub api_rate_per_second: u32,

    /// Burst of the HTTP publish budget.
    #[arg(long, env = "API_RATE_BURST", default_value = "2000", value_parser = greater_than_zero::<NonZeroU32>)]
    pub api_rate_burst: NonZeroU32,

    /// Longest project id accepted, in bytes.
    #[arg(long, env = "MAX_PROJECT_ID_BYTES", default_value = "128", value_parser = greater_than_zero::<NonZeroUsize>)]
    pub max_project_id_bytes: NonZeroUsize,

    /// Requests (forwards, publishes) one connection may have in flight; more get `busy`.
    #[arg(
        long,
        env = "MAX_INFLIGHT_PER_CONNECTION",
        default_value = "256",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub max_inflight_per_connection: NonZeroUsize,

    /// On SIGTERM, clients are closed (1012) spread over this many seconds.
    #[arg(
        long = "drain-seconds",
        value_name = "DRAIN_SECONDS",
        env = "DRAIN_SECONDS",
        default_value = "10",
        value_parser = DurationSetting::SECONDS
    )]
    pub drain_window: Duration,

    /// Longest a batch waits for more entries before it is sent to SQS, in milliseconds. 20 ms
    /// fills batches at 2,000 forwards/s over four queues (5 ms gave 5 entries per call) and
    /// adds at most 20 ms to a confirmation when traffic is light.
    #[arg(
        long = "sqs-batch-linger-ms",
        value_name = "SQS_BATCH_LINGER_MS",
        env = "SQS_BATCH_LINGER_MS",
        default_value = "20",
        value_parser = DurationSetting::MILLISECONDS
    )]
    pub sqs_batch_linger: Duration,

    /// Largest SendMessageBatch payload (and single message), in bytes.
    #[arg(
        long,
        env = "SQS_MAX_BATCH_BYTES",
        default_value = "1048576",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub sqs_max_batch_bytes: NonZeroUsize,

    /// A forward not accepted by SQS within this many seconds is reported as `forward_failed`.
    #[arg(
        long = "forward-deadline-secs",
        value_name = "FORWARD_DEADLINE_SECS",
        env = "FORWARD_DEADLINE_SECS",
        default_value = "10",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub forward_deadline: Duration,

    /// Forwards waiting in the queue dispatcher before clients get `busy`.
    #[arg(
        long,
        env = "DISPATCHER_MAX_PENDING",
        default_value = "10000",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub dispatcher_max_pending: NonZeroUsize,

    /// Records the persistence actor buffers while the table is slow or down; beyond it they are
    /// dropped, counted and logged.
    #[arg(
        long,
        env = "PERSISTENCE_BUFFER_RECORDS",
        default_value = "50000",
        value_parser = greater_than_zero::<NonZeroUsize>
    )]
    pub persistence_buffer_records: NonZeroUsize,

    /// Days a record lives before DynamoDB's TTL removes it.
    #[arg(
        long = "record-ttl-days",
        value_name = "RECORD_TTL_DAYS",
        env = "RECORD_TTL_DAYS",
        default_value = "30",
        value_parser = DurationSetting::DAYS
    )]
    pub record_ttl: Duration,

    /// Seconds between CloudWatch Embedded Metric Format lines on stdout (0 = off).
    #[arg(
        long = "emf-interval-secs",
        value_name = "EMF_INTERVAL_SECS",
        env = "EMF_INTERVAL_SECS",
        default_value = "0",
        value_parser = DurationSetting::SECONDS
    )]
    pub emf_interval: Duration,

    /// Value of the ServiceName dimension of the EMF metrics.
    #[arg(long, env = "SERVICE_NAME", default_value = "agenticai-websocket")]
    pub service_name: String,

    /// HTTP worker threads (0 = one per CPU core).
    #[arg(long, env = "WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Keep presence (who is subscribed to each project, on every task) and answer `presence`,
    /// `presence_stats` and `join_leave`.
    #[arg(long, env = "PRESENCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub presence: bool,

    /// With Redis: seconds a presence member outlives its task's last refresh (each task
    /// refreshes its members every third of it), so a task killed without a word loses its
    /// members within this time.
    #[arg(
        long = "presence-ttl-secs",
        value_name = "PRESENCE_TTL_SECS",
        env = "PRESENCE_TTL_SECS",
        default_value = "60",
        value_parser = DurationSetting::SECONDS.positive()
    )]
    pub presence_ttl: Duration,
}

/// The shortest JWT_SECRET accepted (RFC 7518 3.2: a key of at least the hash's size).
const MIN_JWT_SECRET_BYTES: usize = 32;

/// Open files kept for everything but client connections when MAX_CONNECTIONS is derived from
/// the open-files limit: AWS and Redis connection pools, the spool and record files, the JWKS
/// fetch, HTTP API callers, and sockets still in their handshake.
pub const CONNECTION_FD_HEADROOM: u64 = 1024;

/// The longest WRITE_DELAY_MS accepted.
const MAX_WRITE_DELAY: Duration = Duration::from_secs(1);

/// How a duration setting is read: a whole number in the unit its name says
/// (`PING_INTERVAL_SECS=25`), or a number with a unit (`500ms`, `30s`, `5m`, `2h`, `7d`) that is a
/// whole number of the setting's unit, so what reads it in that unit (the JWT leeway, a TTL in
/// whole seconds) never rounds it. A refused value becomes clap's error, which names the flag and
/// so the variable ([`describe_parse_error`]).
#[derive(Clone, Copy, Debug)]
struct DurationSetting {
    /// What a bare number counts, and the granularity of every value.
    unit: Duration,
    unit_name: &'static str,
    positive: bool,
    at_most: Option<(Duration, &'static str)>,
}

impl DurationSetting {
    const MILLISECONDS: Self = Self::counting(Duration::from_millis(1), "milliseconds");
    const SECONDS: Self = Self::counting(Duration::from_secs(1), "seconds");
    const DAYS: Self = Self::counting(Duration::from_secs(86_400), "days");

    const fn counting(unit: Duration, unit_name: &'static str) -> Self {
        Self { unit, unit_name, positive: false, at_most: None }
    }

    /// Refuses 0, for the settings where no time at all means nothing (a ping every 0 seconds).
    const fn positive(self) -> Self {
        Self { positive: true, ..self }
    }

    /// Refuses more than `limit`; `why` ends the message.
    const fn at_most(self, limit: Duration, why: &'static str) -> Self {
        Self { at_most: Some((limit, why)), ..self }
    }

    /// The duration `value` names, or why it is refused.
    fn parse(&self, value: &str) -> Result<Duration, String> {
        let unit_name = self.unit_name;
        let expected = || {
            format!(
                "{value:?} is not a duration: a whole number of {unit_name}, or one with a unit (500ms, 30s, 5m, \
                 2h, 7d)"
            )
        };
        let (number, suffix) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len()));
        let number: u64 = number.parse().map_err(|_| expected())?;
        let unit = match suffix {
            "" => self.unit,
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(expected()),
        };
        // At most a day's nanoseconds times u64::MAX: far inside u128.
        let nanos = unit.as_nanos() * u128::from(number);
        if nanos % self.unit.as_nanos() != 0 {
            return Err(format!("{value} is not a whole number of {unit_name}"));
        }
        const NANOS_PER_SECOND: u128 = 1_000_000_000;
        let seconds = u64::try_from(nanos / NANOS_PER_SECOND).map_err(|_| format!("{value} is too long"))?;
        // The remainder is less than a second's nanoseconds, so the cast keeps it whole.
        let duration = Duration::from_secs(seconds) + Duration::from_nanos((nanos % NANOS_PER_SECOND) as u64);
        if self.positive && duration.is_zero() {
            return Err("must be greater than 0".into());
        }
        if let Some((limit, why)) = self.at_most.filter(|(limit, _)| duration > *limit) {
            return Err(format!("must be at most {} {unit_name}: {why}", limit.as_nanos() / self.unit.as_nanos()));
        }
        Ok(duration)
    }
}

impl TypedValueParser for DurationSetting {
    type Value = Duration;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Duration, clap::Error> {
        let setting = *self;
        // Through clap's parser for functions, so a refusal is clap's own "invalid value" error.
        (move |text: &str| setting.parse(text)).parse_ref(command, arg, value)
    }
}

/// Parses a setting that must be greater than 0 into its `NonZero*` type, saying so when it is 0
/// (the standard library's "number would be zero for non-zero type" names no rule).
fn greater_than_zero<T: FromStr<Err = ParseIntError>>(value: &str) -> Result<T, String> {
    value.parse().map_err(|error: ParseIntError| match error.kind() {
        IntErrorKind::Zero => "must be greater than 0".to_owned(),
        _ => error.to_string(),
    })
}

/// An http(s) URL with a host (queue URLs, endpoints).
fn check_http_url(value: &str) -> Result<(), String> {
    let url = url::Url::parse(value).map_err(|error| format!("{value:?} is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{value:?} is not an http:// or https:// URL with a host"));
    }
    Ok(())
}

/// A browser origin exactly as browsers send it: `scheme://host[:port]`, nothing after.
pub fn check_origin(value: &str) -> Result<(), String> {
    let expected = "an origin such as https://dashboard.example.com (scheme, host and port only)";
    let url = url::Url::parse(value).map_err(|_| format!("{value:?} is not {expected}"))?;
    if url.origin().ascii_serialization() != value {
        return Err(format!("{value:?} is not {expected}"));
    }
    Ok(())
}

/// An ALLOWED_ORIGINS entry: an origin, or one whose host starts with `*.` (any subdomain).
fn check_origin_pattern(value: &str) -> Result<(), String> {
    match value.split_once("://*.") {
        Some((scheme, rest)) => check_origin(&format!("{scheme}://wildcard.{rest}"))
            .map_err(|_| format!("{value:?} is not an origin pattern such as https://*.example.com")),
        None => check_origin(value),
    }
}

/// Creates the directory if needed and checks a file can be written in it.
fn check_writable_dir(dir: &std::path::Path) -> Result<(), String> {
    let shown = dir.display();
    std::fs::create_dir_all(dir).map_err(|error| format!("cannot create {shown}: {error}"))?;
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|error| format!("{shown} is not writable: {error}"))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// A URL with any password replaced by `***`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((credentials, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = credentials.split_once(':').map_or("", |(user, _)| user);
    let credentials = if credentials.contains(':') { format!("{user}:***") } else { "***".to_owned() };
    format!("{scheme}://{credentials}@{host}{path}")
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
    let long = flag.trim_start_matches("--").split([' ', '=']).next().unwrap_or_default().to_owned();
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

/// The four agent queues, when all are configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentQueueUrls {
    pub pm: String,
    pub dev: String,
    pub qa: String,
    pub ops: String,
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
    /// Checks what clap cannot: combinations, URLs, origins, addresses, the data directory (clap
    /// has already refused values that do not parse, zeros and durations out of range). The
    /// all-or-none rule of the agent queues is here too: an empty variable counts as unset, which
    /// clap's `requires` cannot say, and a configuration built in code never meets clap.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.client_timeout <= self.ping_interval {
            return Err(ConfigError::Invalid {
                variable: "CLIENT_TIMEOUT_SECS",
                reason: format!(
                    "must be longer than PING_INTERVAL_SECS ({:?}), or every idle client is closed",
                    self.ping_interval
                ),
            });
        }
        if self.publish_api_keys.iter().any(|key| key.trim().is_empty()) {
            return Err(ConfigError::Invalid { variable: "PUBLISH_API_KEYS", reason: "contains an empty key".into() });
        }
        self.agent_queue_urls()?;
        let urls = [
            ("SQS_QUEUE_URL_PM", &self.sqs_queue_url_pm),
            ("SQS_QUEUE_URL_DEV", &self.sqs_queue_url_dev),
            ("SQS_QUEUE_URL_QA", &self.sqs_queue_url_qa),
            ("SQS_QUEUE_URL_OPS", &self.sqs_queue_url_ops),
            ("SQS_QUEUE_URL_UPDATES", &self.sqs_queue_url_updates),
            ("AWS_ENDPOINT_URL", &self.aws_endpoint_url),
        ];
        for (variable, url) in urls {
            if let Some(url) = url.as_deref().filter(|url| !url.is_empty()) {
                check_http_url(url).map_err(|reason| ConfigError::Invalid { variable, reason })?;
            }
        }
        if self.jwt_secret().is_some() && self.jwt_jwks_url().is_some() {
            return Err(ConfigError::Invalid {
                variable: "JWT_SECRET",
                reason: "set JWT_SECRET or JWT_JWKS_URL, not both".into(),
            });
        }
        if self.jwt_secret().is_some_and(|secret| secret.len() < MIN_JWT_SECRET_BYTES) {
            return Err(ConfigError::Invalid {
                variable: "JWT_SECRET",
                reason: format!("shorter than {MIN_JWT_SECRET_BYTES} bytes: an HS256 secret needs 256 bits"),
            });
        }
        if let Some(url) = self.jwt_jwks_url() {
            // The URL may hold a password: the message shows it redacted.
            check_http_url(url).map_err(|_| ConfigError::Invalid {
                variable: "JWT_JWKS_URL",
                reason: format!("{} is not an http:// or https:// URL with a host", redact_url(url)),
            })?;
        }
        for origin in &self.allowed_origins {
            check_origin_pattern(origin)
                .map_err(|reason| ConfigError::Invalid { variable: "ALLOWED_ORIGINS", reason })?;
        }
        crate::access::client_address::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|reason| ConfigError::Invalid { variable: "TRUSTED_PROXIES", reason })?;
        for origin in &self.cors_allowed_origins {
            check_origin(origin).map_err(|reason| ConfigError::Invalid { variable: "CORS_ALLOWED_ORIGINS", reason })?;
        }
        if let Some(url) = self.redis_url() {
            redis::IntoConnectionInfo::into_connection_info(url).map_err(|error| ConfigError::Invalid {
                variable: "REDIS_URL",
                reason: format!(
                    "{} is not a Redis URL ({error}); expected redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://...",
                    redact_url(url)
                ),
            })?;
        }
        self.bind_addresses()?;
        if self.internal_port.is_some_and(|internal| internal != 0 && internal == self.port) {
            return Err(ConfigError::Invalid {
                variable: "INTERNAL_PORT",
                reason: format!("must differ from WEBSOCKET_PORT ({})", self.port),
            });
        }
        if self.table_name().is_none() || self.agent_queue_urls()?.is_none() {
            check_writable_dir(&self.data_dir)
                .map_err(|reason| ConfigError::Invalid { variable: "DATA_DIR", reason })?;
        }
        Ok(())
    }

    /// The addresses WEBSOCKET_HOST names (a host name may resolve to several).
    pub fn bind_addresses(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.addresses_on(self.port)
    }

    /// The addresses of the operator endpoints' port, when INTERNAL_PORT is set.
    pub fn internal_bind_addresses(&self) -> Result<Option<Vec<SocketAddr>>, ConfigError> {
        self.internal_port.map(|port| self.addresses_on(port)).transpose()
    }

    fn addresses_on(&self, port: u16) -> Result<Vec<SocketAddr>, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid { variable: "WEBSOCKET_HOST", reason };
        let addresses: Vec<SocketAddr> = (self.host.as_str(), port)
            .to_socket_addrs()
            .map_err(|error| invalid(format!("cannot resolve {:?}: {error}", self.host)))?
            .collect();
        if addresses.is_empty() {
            return Err(invalid(format!("{:?} resolves to no address", self.host)));
        }
        Ok(addresses)
    }

    /// Whether every address bound is a loopback one (only this machine can connect).
    pub fn binds_loopback_only(&self) -> bool {
        self.bind_addresses().is_ok_and(|addresses| addresses.iter().all(|address| address.ip().is_loopback()))
    }

    /// The agent queues: `Ok(None)` when none is set (local spool), an error naming the missing
    /// ones when only some are.
    pub fn agent_queue_urls(&self) -> Result<Option<AgentQueueUrls>, ConfigError> {
        let named = [
            ("SQS_QUEUE_URL_PM", &self.sqs_queue_url_pm),
            ("SQS_QUEUE_URL_DEV", &self.sqs_queue_url_dev),
            ("SQS_QUEUE_URL_QA", &self.sqs_queue_url_qa),
            ("SQS_QUEUE_URL_OPS", &self.sqs_queue_url_ops),
        ];
        let missing: Vec<&'static str> =
            named.iter().filter(|(_, url)| url.as_deref().is_none_or(str::is_empty)).map(|(name, _)| *name).collect();
        match missing.len() {
            4 => Ok(None),
            0 => Ok(Some(AgentQueueUrls {
                pm: self.sqs_queue_url_pm.clone().unwrap_or_default(),
                dev: self.sqs_queue_url_dev.clone().unwrap_or_default(),
                qa: self.sqs_queue_url_qa.clone().unwrap_or_default(),
                ops: self.sqs_queue_url_ops.clone().unwrap_or_default(),
            })),
            _ => Err(ConfigError::PartialQueues { missing }),
        }
    }

    /// The DynamoDB table, when one is configured.
    pub fn table_name(&self) -> Option<&str> {
        self.dynamodb_table_name.as_deref().filter(|name| !name.is_empty())
    }

    pub fn jwt_secret(&self) -> Option<&str> {
        self.jwt_secret.as_deref().filter(|secret| !secret.is_empty())
    }

    pub fn jwt_jwks_url(&self) -> Option<&str> {
        self.jwt_jwks_url.as_deref().filter(|url| !url.is_empty())
    }

    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|url| !url.is_empty())
    }

    pub fn updates_queue_url(&self) -> Option<&str> {
        self.sqs_queue_url_updates.as_deref().filter(|url| !url.is_empty())
    }

    /// MAX_CONNECTIONS, or when 0 what `open_files` (the process's limit) leaves after the
    /// headroom.
    pub fn max_connections(&self, open_files: u64) -> usize {
        match self.max_connections {
            0 => open_files.saturating_sub(CONNECTION_FD_HEADROOM).max(1).try_into().unwrap_or(usize::MAX),
            set => set,
        }
    }

    /// Configuration for tests and embedding: defaults, loopback, a free port, no AWS, whatever
    /// the environment says.
    pub fn local_defaults(data_dir: PathBuf) -> Self {
        let mut config = Config::parse_from(["agenticai-websocket"]);
        config.host = "127.0.0.1".into();
        config.port = 0;
        config.internal_port = None;
        config.data_dir = data_dir;
        config.dynamodb_table_name = None;
        config.aws_endpoint_url = None;
        config.sqs_queue_url_updates = None;
        config.redis_url = None;
        config.sqs_queue_url_pm = None;
        config.sqs_queue_url_dev = None;
        config.sqs_queue_url_qa = None;
        config.sqs_queue_url_ops = None;
        config.publish_api_keys = Vec::new();
        config.cors_allowed_origins = Vec::new();
        config.jwt_secret = None;
        config.jwt_jwks_url = None;
        config.jwt_issuer = None;
        config.jwt_audience = None;
        config.allow_anonymous = false;
        config.allowed_origins = Vec::new();
        config.trusted_proxies = Vec::new();
        config.log_format = LogFormat::Text;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(spool.agent_queue_urls().unwrap(), None);
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
        assert_eq!(parse(&["--write-delay-ms", "1000"]).write_delay, Duration::from_secs(1));
        let message = refused(&["--write-delay-ms", "1001"]);
        assert!(message.starts_with("WRITE_DELAY_MS"), "{message}");
    }

    #[test]
    fn max_connections_defaults_to_the_open_files_limit_less_the_headroom() {
        let config = parse(&[]);
        assert_eq!(config.max_connections(65_536), 64_512);
        assert_eq!(config.max_connections(100), 1, "a tiny limit still admits one connection");
        assert_eq!(parse(&["--max-connections", "5000"]).max_connections(65_536), 5000);
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
        assert_eq!(config.max_connections, 0);
        assert_eq!(config.client_rate_per_second, 0);
        assert!(config.emf_interval.is_zero() && config.write_delay.is_zero());
        assert!(config.drain_window.is_zero() && config.jwt_leeway.is_zero());
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
        assert_eq!(config.ping_interval, Duration::from_secs(30));
        assert_eq!(config.sqs_batch_linger, Duration::from_millis(5));
        assert_eq!(config.record_ttl, Duration::from_secs(7 * 86_400));
        let defaults = parse(&[]);
        assert_eq!(
            (defaults.client_timeout, defaults.drain_window),
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
        assert_eq!(parse(&[]).max_frame_bytes.get(), 256 * 1024);
    }

    #[test]
    fn urls_in_messages_lose_their_passwords() {
        assert_eq!(redact_url("redis://:hunter2@cache:6379/0"), "redis://:***@cache:6379/0");
        assert_eq!(redact_url("rediss://app:hunter2@cache"), "rediss://app:***@cache");
        assert_eq!(redact_url("redis://token@cache"), "redis://***@cache");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact_url("redis://cache/0?password=x@y"), "redis://cache/0?password=x@y");
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
        assert!(ok.binds_loopback_only());
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
}
