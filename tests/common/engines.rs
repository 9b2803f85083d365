//! Suites that run on every engine, as Centrifuge checks each broker against one suite: a
//! [`Backend`] names the engine, and `on_both_engines!(test_a, test_b)` turns each
//! `async fn test_a(backend: Backend)` into `memory::test_a` (no REDIS_URL), `redis::test_a`
//! (a private redis-server, Debian's, started for the test) and `redis_cluster::test_a` (a
//! private Redis Cluster of six of them, REDIS_CLUSTER=true). Suites only Redis can run take a
//! [`RedisDeployment`] instead, named by `on_redis_engines!` as `redis::` and `redis_cluster::`.

use agenticai_websocket::config::Config;

use super::{RedisCluster, RedisServer, TestServer};

/// The engine a test runs against.
pub enum Backend {
    Memory,
    Redis(RedisDeployment),
}

impl Backend {
    pub fn redis() -> Self {
        Backend::Redis(RedisDeployment::node())
    }

    pub fn cluster() -> Self {
        Backend::Redis(RedisDeployment::cluster())
    }

    /// The environment a server process on this engine takes (none on memory).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Backend::Memory => Vec::new(),
            Backend::Redis(redis) => redis.env(),
        }
    }

    /// A server on this engine, adjusted by `configure`.
    pub fn server(&self, configure: impl FnOnce(&mut Config)) -> TestServer {
        match self {
            Backend::Memory => TestServer::start(configure),
            Backend::Redis(redis) => redis.server(configure),
        }
    }
}

/// The Redis a test runs against: one node, or a cluster.
pub enum RedisDeployment {
    Node(RedisServer),
    Cluster(RedisCluster),
}

impl RedisDeployment {
    pub fn node() -> Self {
        RedisDeployment::Node(RedisServer::start())
    }

    pub fn cluster() -> Self {
        RedisDeployment::Cluster(RedisCluster::start())
    }

    /// The environment a server process on this Redis takes.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            RedisDeployment::Node(redis) => vec![("REDIS_URL", redis.url())],
            RedisDeployment::Cluster(cluster) => vec![("REDIS_URL", cluster.url()), ("REDIS_CLUSTER", "true".into())],
        }
    }

    /// Points `config` at this Redis.
    pub fn configure(&self, config: &mut Config) {
        match self {
            RedisDeployment::Node(redis) => config.engine.redis_url = Some(redis.url()),
            RedisDeployment::Cluster(cluster) => {
                config.engine.redis_url = Some(cluster.url());
                config.engine.redis_cluster = true;
            }
        }
    }

    /// An in-process server on this Redis, adjusted by `configure`.
    pub fn server(&self, configure: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start(|config| {
            self.configure(config);
            configure(config);
        })
    }

    /// Kills it outright (SIGKILL): the node, or every node.
    pub fn kill(&mut self) {
        match self {
            RedisDeployment::Node(redis) => redis.kill(),
            RedisDeployment::Cluster(cluster) => cluster.kill(),
        }
    }

    /// Starts it again with its data (a cluster: every node, then waits for `cluster_state:ok`).
    pub fn restart(&mut self) {
        match self {
            RedisDeployment::Node(redis) => redis.restart(),
            RedisDeployment::Cluster(cluster) => cluster.restart(),
        }
    }

    /// Runs one command (on a cluster, where its key lives, or on every primary for one without
    /// a key, such as FLUSHALL); panics as [`RedisServer::command`] does.
    pub fn command<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        match self {
            RedisDeployment::Node(redis) => redis.command(args),
            RedisDeployment::Cluster(cluster) => cluster.command(args),
        }
    }

    /// Closes every pub/sub connection the servers hold (`CLIENT KILL TYPE pubsub` on every node).
    pub fn kill_pubsub_connections(&self) {
        let nodes = match self {
            RedisDeployment::Node(redis) => std::slice::from_ref(redis),
            RedisDeployment::Cluster(cluster) => &cluster.nodes[..],
        };
        for node in nodes {
            let _killed: i64 = node.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        }
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

/// Each test named, once on one Redis and once on a Redis Cluster (see the module documentation).
#[macro_export]
macro_rules! on_redis_engines {
    ($($test:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::common::RedisDeployment::node()).await;
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::common::RedisDeployment::cluster()).await;
                }
            )*
        }
    };
}
