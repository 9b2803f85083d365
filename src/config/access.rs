//! Who may connect and what they may do: publish keys, connection tokens, browser origins, and
//! the abuse limits (connections, subscriptions, request rates).

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use super::{
    values::{
        check_http_url, check_origin, check_origin_pattern, greater_than_zero, non_empty, parse_networks, redact_url,
        DurationSetting,
    },
    ConfigError,
};

/// The shortest JWT_SECRET accepted (RFC 7518 3.2: a key of at least the hash's size).
const MIN_JWT_SECRET_BYTES: usize = 32;

/// Open files kept for everything but client connections when MAX_CONNECTIONS is derived from
/// the open-files limit: AWS and Redis connection pools, the spool and record files, the JWKS
/// fetch, HTTP API callers, and sockets still in their handshake.
pub const CONNECTION_FD_HEADROOM: u64 = 1024;

/// The access policy's settings ([`crate::access`]).
#[derive(Clone, Debug, clap::Args)]
pub struct AccessSettings {
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

    /// Seconds of clock skew allowed for `exp` and `nbf` (0 = none).
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
}

impl AccessSettings {
    /// Keys, token settings, origins and proxies are each usable, and tokens come from one
    /// source.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.publish_api_keys.iter().any(|key| key.trim().is_empty()) {
            return Err(ConfigError::Invalid { variable: "PUBLISH_API_KEYS", reason: "contains an empty key".into() });
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
        parse_networks(&self.trusted_proxies)
            .map_err(|reason| ConfigError::Invalid { variable: "TRUSTED_PROXIES", reason })?;
        for origin in &self.cors_allowed_origins {
            check_origin(origin).map_err(|reason| ConfigError::Invalid { variable: "CORS_ALLOWED_ORIGINS", reason })?;
        }
        Ok(())
    }

    pub fn jwt_secret(&self) -> Option<&str> {
        non_empty(&self.jwt_secret)
    }

    pub fn jwt_jwks_url(&self) -> Option<&str> {
        non_empty(&self.jwt_jwks_url)
    }

    /// MAX_CONNECTIONS, or when 0 what `open_files` (the process's limit) leaves after the
    /// headroom.
    pub fn max_connections(&self, open_files: u64) -> usize {
        match self.max_connections {
            0 => open_files.saturating_sub(CONNECTION_FD_HEADROOM).max(1).try_into().unwrap_or(usize::MAX),
            set => set,
        }
    }
}
