//! Suites that run on every engine, as Centrifuge checks each broker against one suite: a
//! [`Backend`] names the engine, and `on_both_engines!(test_a, test_b)` turns each
//! `async fn test_a(backend: Backend)` into `memory::test_a` (no REDIS_URL), `redis::test_a`
//! (a private redis-server, Debian's, started for the test) and `redis_cluster::test_a` (a
//! private Redis Cluster of six of them, REDIS_CLUSTER=true).

use agenticai_websocket::config::Config;

use super::{RedisCluster, RedisServer, TestServer};

/// The engine a test runs against.
pub enum Backend {
    Memory,
    Redis(RedisServer),
    Cluster(RedisCluster),
}

impl Backend {
    pub fn redis() -> Self {
        Backend::Redis(RedisServer::start())
    }

    pub fn cluster() -> Self {
        Backend::Cluster(RedisCluster::start())
    }

    /// A server on this engine, adjusted by `configure`.
    pub fn server(&self, configure: impl FnOnce(&mut Config)) -> TestServer {
        let (redis_url, redis_cluster) = match self {
            Backend::Memory => (None, false),
            Backend::Redis(redis) => (Some(redis.url()), false),
            Backend::Cluster(cluster) => (Some(cluster.url()), true),
        };
        TestServer::start(move |config| {
            config.engine.redis_url = redis_url;
            config.engine.redis_cluster = redis_cluster;
            configure(config);
        })
    }
}

/// A Redis a test takes down (SIGKILL) and brings back with its data: one node, or every node
/// of a cluster.
pub trait Outage {
    fn kill(&mut self);
    fn restart(&mut self);
}

impl Outage for RedisServer {
    fn kill(&mut self) {
        RedisServer::kill(self);
    }

    fn restart(&mut self) {
        RedisServer::restart(self);
    }
}

impl Outage for RedisCluster {
    fn kill(&mut self) {
        RedisCluster::kill(self);
    }

    fn restart(&mut self) {
        RedisCluster::restart(self);
    }
}

/// Each test named, once per engine (see the module documentation).
#[macro_export]
macro_rules! on_both_engines {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::common::Backend::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::common::Backend::redis()).await;
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::common::Backend::cluster()).await;
                }
            )*
        }
    };
}
