//! Targets (loopback only), source addresses, the open-files limit, and opening one WebSocket
//! connection from a chosen source address.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::{bail, Context as _};
use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    tungstenite::{self, protocol::WebSocketConfig, Message},
    WebSocketStream,
};

pub type Ws = WebSocketStream<TcpStream>;

/// One server instance to drive: `ws://HOST:PORT/PATH`, HOST a loopback address.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// Path and query as given (`/ws`, `/`, `/ws?x=1`).
    pub path: String,
}

impl Target {
    /// Parses and checks a `ws://` URL. Anything but a loopback address is refused.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("ws://")
            .with_context(|| format!("{url}: only ws:// URLs are supported (the load generator has no TLS)"))?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let addr = parse_authority(authority).with_context(|| format!("{url}: bad host:port"))?;
        check_loopback(addr.ip()).with_context(|| format!("{url}: refused"))?;
        Ok(Target { addr, path: if path.is_empty() { "/".into() } else { path.into() } })
    }

    /// The `ws://` URL, with `project_id` added to the query when given.
    pub fn ws_url(&self, project_id: Option<&str>) -> String {
        let host = self.host();
        match project_id {
            None => format!("ws://{host}{}", self.path),
            Some(project) => {
                let sep = if self.path.contains('?') { '&' } else { '?' };
                format!("ws://{host}{}{sep}project_id={project}", self.path)
            }
        }
    }

    /// `http://HOST:PORT` of the same instance (publish API, /metrics).
    pub fn http_base(&self) -> String {
        format!("http://{}", self.host())
    }

    /// `HOST:PORT` (an IPv6 host in brackets).
    pub fn host(&self) -> String {
        match self.addr {
            SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
            SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
        }
    }
}

/// One target of each distinct instance (`HOST:PORT`) among `targets`, in the order of their
/// `http_base`.
pub fn distinct_instances(targets: &[Target]) -> Vec<&Target> {
    let mut instances: Vec<&Target> = targets.iter().collect();
    instances.sort_by_key(|target| target.http_base());
    instances.dedup_by_key(|target| target.http_base());
    instances
}

fn parse_authority(authority: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = authority.rsplit_once(':').context("a port is required")?;
    let port: u16 = port.parse().context("bad port")?;
    let ip = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .context("host must be an IP address or localhost")?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Only 127.0.0.0/8 and ::1: the load generator never sends anywhere else.
pub fn check_loopback(ip: IpAddr) -> anyhow::Result<()> {
    if !ip.is_loopback() {
        bail!("{ip} is not a loopback address; the load generator only targets 127.0.0.0/8 and ::1");
    }
    Ok(())
}

/// Checks an `http://` URL (metrics, publish API, SQS emulator) the same way.
pub fn check_http_url(url: &str) -> anyhow::Result<()> {
    let rest = url.strip_prefix("http://").with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let addr = parse_authority(authority).with_context(|| format!("{url}: bad host:port"))?;
    check_loopback(addr.ip()).with_context(|| format!("{url}: refused"))
}

/// The `index`-th client's source address when spreading over `count` addresses
/// 127.0.0.2 ... 127.0.0.(count+1); `None` (the kernel's choice) when `count` is 0.
pub fn source_addr(index: usize, count: u8) -> Option<IpAddr> {
    if count == 0 {
        return None;
    }
    let last = 2 + (index % count as usize) as u8;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force.
pub fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// Small buffers: thousands of idle connections per process.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(16 * 1024).write_buffer_size(0)
}

/// What a server sends first on a new WebSocket, before the connection counts as open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Greeting {
    /// Our gateway's `{"type":"connected",...}`: the session exists once it has arrived.
    Connected,
    /// Nothing (Nchan): the connection is open when the upgrade completes.
    None,
}

/// Opens a WebSocket from `source` (if any) and waits for the server's `connected` greeting.
/// Errors are a short cause label ("connection_refused", "timeout", "http_503", ...).
pub async fn open(target: &Target, url: &str, source: Option<IpAddr>, timeout: Duration) -> Result<Ws, String> {
    open_expecting(target, url, source, timeout, Greeting::Connected).await
}

/// [`open`], waiting for the given `greeting`.
pub async fn open_expecting(
    target: &Target,
    url: &str,
    source: Option<IpAddr>,
    timeout: Duration,
    greeting: Greeting,
) -> Result<Ws, String> {
    match tokio::time::timeout(timeout, open_inner(target, url, source, greeting)).await {
        Ok(result) => result,
        Err(_) => Err("timeout".into()),
    }
}

async fn open_inner(target: &Target, url: &str, source: Option<IpAddr>, greeting: Greeting) -> Result<Ws, String> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| io_cause("socket", &e))?;
    if let Some(ip) = source {
        if target.addr.is_ipv4() {
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| io_cause("bind", &e))?;
        }
    }
    let stream = socket.connect(target.addr).await.map_err(|e| io_cause("connect", &e))?;
    let _ = stream.set_nodelay(true);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map_err(|e| ws_cause("handshake", &e))?;
    if greeting == Greeting::None {
        return Ok(ws);
    }
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.contains("\"connected\"") => Ok(ws),
        Some(Ok(other)) => Err(format!("greeting_unexpected:{}", frame_kind(&other))),
        Some(Err(e)) => Err(ws_cause("greeting", &e)),
        None => Err("greeting_eof".into()),
    }
}

pub fn frame_kind(message: &Message) -> &'static str {
    match message {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        Message::Ping(_) => "ping",
        Message::Pong(_) => "pong",
        Message::Close(_) => "close",
        Message::Frame(_) => "frame",
    }
}

pub fn io_cause(stage: &str, error: &io::Error) -> String {
    let kind = match error.raw_os_error() {
        Some(24) => "too_many_open_files".to_owned(),
        Some(98) => "addr_in_use".to_owned(),
        Some(99) => "addr_not_available".to_owned(),
        Some(111) => "connection_refused".to_owned(),
        Some(104) => "connection_reset".to_owned(),
        Some(110) => "timed_out".to_owned(),
        _ => format!("{:?}", error.kind()).to_lowercase(),
    };
    format!("{stage}_{kind}")
}

pub fn ws_cause(stage: &str, error: &tungstenite::Error) -> String {
    use tungstenite::Error as E;
    match error {
        E::Http(response) => format!("{stage}_http_{}", response.status().as_u16()),
        E::Io(io) => io_cause(stage, io),
        E::ConnectionClosed | E::AlreadyClosed => format!("{stage}_closed"),
        E::Protocol(_) => format!("{stage}_protocol"),
        E::Capacity(_) => format!("{stage}_capacity"),
        _ => format!("{stage}_other"),
    }
}

/// The close code of a close frame ("none" when there was none).
pub fn close_code(message: &Message) -> String {
    match message {
        Message::Close(Some(frame)) => u16::from(frame.code).to_string(),
        _ => "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_instance_counts_once_whatever_its_path() {
        let targets: Vec<Target> = ["ws://127.0.0.1:9001/ws", "ws://127.0.0.1:9000/", "ws://127.0.0.1:9001/other"]
            .iter()
            .map(|url| Target::parse(url).expect("loopback"))
            .collect();
        let hosts: Vec<String> = distinct_instances(&targets).iter().map(|target| target.host()).collect();
        assert_eq!(hosts, ["127.0.0.1:9000", "127.0.0.1:9001"]);
    }
}
