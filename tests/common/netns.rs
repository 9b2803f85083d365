//! A client on another address than loopback: a private network namespace joined to this one by
//! a veth pair (`ip netns`, `ip link`; the tests run as root, as scripts/test.sh does in CI).
//!
//! The host end of the pair has `host_address`, the namespace's end `peer_address`; a server
//! bound to 0.0.0.0 (or to `host_address`) sees a client run inside the namespace
//! ([`NetworkNamespace::websocket_upgrade`], [`NetworkNamespace::http_get`]) as a network peer
//! at `peer_address`. Each namespace has its own name and its own /30 of 10.213.0.0/16, and is
//! removed on drop. Where `ip netns` cannot be used the test fails, saying why: a protection
//! against network peers that is not exercised from the network is not tested.

use std::{
    net::Ipv4Addr,
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
};

use serde_json::Value;

/// Namespaces made by this test binary so far (each gets its own name and subnet).
static CREATED: AtomicUsize = AtomicUsize::new(0);

pub struct NetworkNamespace {
    pub name: String,
    /// The host end's address: where a client inside the namespace connects to.
    pub host_address: Ipv4Addr,
    /// The namespace end's address: the peer address the server sees.
    pub peer_address: Ipv4Addr,
    host_link: String,
}

impl NetworkNamespace {
    pub fn create() -> Self {
        let sequence = CREATED.fetch_add(1, Ordering::SeqCst);
        let process = std::process::id() as usize;
        // A /30 per namespace; the process id spreads concurrent test binaries apart.
        let slot = (process * 37 + sequence) % 16_384;
        let base = [10, 213, (slot / 64) as u8, ((slot % 64) * 4) as u8];
        let namespace = NetworkNamespace {
            name: format!("aiws-test-{process}-{sequence}"),
            host_address: Ipv4Addr::new(base[0], base[1], base[2], base[3] + 1),
            peer_address: Ipv4Addr::new(base[0], base[1], base[2], base[3] + 2),
            // Interface names are at most 15 bytes.
            host_link: format!("aw{process:x}h{sequence}"),
        };
        let inner_link = format!("aw{process:x}n{sequence}");
        ip(&["netns", "add", &namespace.name]);
        // From here on, drop removes what was made, even if a later step fails.
        ip(&["link", "add", &namespace.host_link, "type", "veth", "peer", "name", &inner_link]);
        ip(&["link", "set", &inner_link, "netns", &namespace.name]);
        ip(&["addr", "add", &format!("{}/30", namespace.host_address), "dev", &namespace.host_link]);
        ip(&["link", "set", &namespace.host_link, "up"]);
        let inside = |args: &[&str]| {
            let prefix: [&str; 4] = ["netns", "exec", &namespace.name, "ip"];
            ip(&[&prefix[..], args].concat());
        };
        inside(&["addr", "add", &format!("{}/30", namespace.peer_address), "dev", &inner_link]);
        inside(&["link", "set", &inner_link, "up"]);
        inside(&["link", "set", "lo", "up"]);
        namespace
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// A WebSocket upgrade from inside the namespace to `host:port` `path` with extra header
    /// lines (`"Origin: https://example"`), by a client speaking RFC 6455 (Python's standard
    /// library): its HTTP status, the JSON body of a refusal, and the first frame of an accepted
    /// connection (the `connected` greeting).
    pub fn websocket_upgrade(&self, host: &str, port: u16, path: &str, headers: &[&str]) -> Upgrade {
        let output = self
            .command("python3")
            .args(["-c", WEBSOCKET_CLIENT, host, &port.to_string(), path])
            .args(headers)
            .output()
            .expect("python3 runs in the namespace");
        let answer: Value = serde_json::from_slice(&succeeded("the WebSocket client", output).stdout)
            .expect("the WebSocket client prints JSON");
        Upgrade {
            status: answer["status"].as_u64().expect("a status") as u16,
            body: serde_json::from_str(answer["body"].as_str().unwrap_or_default()).unwrap_or(Value::Null),
            greeting: answer["greeting"].as_str().and_then(|text| serde_json::from_str(text).ok()),
        }
    }

    /// A GET from inside the namespace (curl) with extra header lines: its status and JSON body
    /// (`Null` when the body is not JSON).
    pub fn http_get(&self, url: &str, headers: &[&str]) -> (u16, Value) {
        let mut command = self.command("curl");
        command.args(["--silent", "--show-error", "--max-time", "10", "--write-out", "\n%{http_code}", url]);
        for header in headers {
            command.args(["--header", header]);
        }
        let output = succeeded("curl", command.output().expect("curl runs in the namespace"));
        let text = String::from_utf8_lossy(&output.stdout);
        let (body, status) = text.rsplit_once('\n').expect("curl wrote the status last");
        (status.trim().parse().expect("an HTTP status"), serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

impl Drop for NetworkNamespace {
    fn drop(&mut self) {
        // Removing the namespace removes its end of the pair, and with it the host end.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).output();
    }
}

/// What a WebSocket client got for its upgrade.
#[derive(Debug)]
pub struct Upgrade {
    pub status: u16,
    /// The JSON body of a refusal (`Null` for none).
    pub body: Value,
    /// The first frame after a 101, as JSON.
    pub greeting: Option<Value>,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().unwrap_or_else(|error| {
        panic!("`ip` cannot run ({error}): these tests need iproute2 and root, to make a network namespace")
    });
    succeeded(&format!("ip {}", args.join(" ")), output);
}

fn succeeded(what: &str, output: Output) -> Output {
    assert!(
        output.status.success(),
        "{what} failed ({}; these tests need root and `ip netns`): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The upgrade and the first server frame, by hand, with the standard library only; prints
/// `{"status", "body", "greeting"}`. Arguments: host, port, path, extra header lines.
const WEBSOCKET_CLIENT: &str = r#"
import base64, json, os, socket, sys

host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
key = base64.b64encode(os.urandom(16)).decode()
lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
         f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", *sys.argv[4:], "", ""]
sock = socket.create_connection((host, port), timeout=10)
sock.sendall("\r\n".join(lines).encode())
received = b""

def take(count):
    global received
    while len(received) < count:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit(f"the server closed after {received!r}")
        received += chunk
    taken, received = received[:count], received[count:]
    return taken

while b"\r\n\r\n" not in received:
    chunk = sock.recv(65536)
    if not chunk:
        raise SystemExit(f"the server closed during the answer's head: {received!r}")
    received += chunk
head, _, received = received.partition(b"\r\n\r\n")
status_line, *header_lines = head.decode("latin-1").split("\r\n")
status = int(status_line.split(" ")[1])
headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)}
answer = {"status": status, "body": None, "greeting": None}
if status == 101:
    first, second = take(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(take(2), "big")
    elif length == 127:
        length = int.from_bytes(take(8), "big")
    answer["greeting"] = take(length).decode()
else:
    answer["body"] = take(int(headers.get("content-length", "0"))).decode()
print(json.dumps(answer))
"#;
