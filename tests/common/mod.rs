//! Test support: a real server on a free loopback port, a real WebSocket client, and the AWS
//! emulator (moto) over its real wire protocol.
//!
//! Every test binary declares it `pub mod common;`: it is a library shared by all of them, and
//! what one binary leaves unused another uses. Public items are its interface; private ones are
//! still checked for dead code.
//!
//! | file | what |
//! |---|---|
//! | `server.rs` | the gateway under test: in-process ([`TestServer`]) or as a binary ([`ChildServer`]); metrics read from it |
//! | `client.rs` | a real WebSocket client ([`Client`]), refused upgrades, the resume-under-load scenario |
//! | `raw.rs` | raw TCP frames, for what a well-behaved client cannot send |
//! | `tokens.rs` | signed tokens and a JWKS server |
//! | `aws.rs` | the AWS emulator (moto): endpoint, SDK configuration, queues |
//! | `faults.rs` | fault-injecting proxies (DynamoDB batches, outages) and the server they run on |
//! | `redis.rs` | a private redis-server |
//! | `redis_cluster.rs` | a private Redis Cluster: three primaries, three replicas ([`RedisCluster`]) |
//! | `engines.rs` | suites run on every engine ([`Backend`], `on_both_engines!`): memory, one Redis, a Redis Cluster |
//! | `netns.rs` | a network namespace, for callers that are not loopback |
//! | `wire.rs` | the wire record (`RECORD_WIRE_DIR`) the API specs check replays; [`wire::send`] and [`wire::get`] record HTTP |

pub mod netns;
pub mod raw;
pub mod tokens;
pub mod wire;

mod aws;
mod client;
mod engines;
mod faults;
mod redis;
mod redis_cluster;
mod server;

pub use self::{aws::*, client::*, engines::*, faults::*, redis::*, redis_cluster::*, server::*};

use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Ports handed to the servers the tests start (Redis nodes and their cluster bus, gateways):
/// below Linux's ephemeral range (32768 up), so no outgoing connection of this machine takes one
/// between the moment it is handed out and the moment its server binds it, and never the same
/// twice in one test binary. (Port 0's pick is an ephemeral port, and a six-node cluster started
/// beside busy tests now and then found one of its ports taken and never came up.)
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Each test binary starts at its own place in the range, so two running at once seldom meet.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = TEST_PORTS.start + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}")
}
