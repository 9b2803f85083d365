//! Where and how the HTTP server listens: the public and operator ports, socket and request
//! timeouts, worker threads, and the drain window on SIGTERM.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    time::Duration,
};

use super::{values::DurationSetting, ConfigError};

/// The HTTP server's settings ([`crate::server`]).
#[derive(Clone, Debug, clap::Args)]
pub struct ServerSettings {
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

    /// On SIGTERM, clients are closed (1012) spread over this many seconds (0 = all at once).
    #[arg(
        long = "drain-seconds",
        value_name = "DRAIN_SECONDS",
        env = "DRAIN_SECONDS",
        default_value = "10",
        value_parser = DurationSetting::SECONDS
    )]
    pub drain_window: Duration,

    /// HTTP worker threads (0 = one per CPU core).
    #[arg(long, env = "WORKERS", default_value_t = 0)]
    pub workers: usize,
}

impl ServerSettings {
    /// The host resolves and the two ports differ.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.bind_addresses()?;
        if self.internal_port.is_some_and(|internal| internal != 0 && internal == self.port) {
            return Err(ConfigError::Invalid {
                variable: "INTERNAL_PORT",
                reason: format!("must differ from WEBSOCKET_PORT ({})", self.port),
            });
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
}
