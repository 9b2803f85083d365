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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local addr").port()
}
