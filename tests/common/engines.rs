//! Suites that run on both engines, as Centrifuge checks each broker against one suite: a
//! [`Backend`] names the engine, and `on_both_engines!(test_a, test_b)` turns each
//! `async fn test_a(backend: Backend)` into `memory::test_a` (no REDIS_URL) and `redis::test_a`
//! (a private redis-server, Debian's, started for the test).

use agenticai_websocket::config::Config;

use super::{RedisServer, TestServer};

/// The engine a test runs against.
pub enum Backend {
    Memory,
    Redis(RedisServer),
}

impl Backend {
    pub fn redis() -> Self {
        Backend::Redis(RedisServer::start())
    }

    /// A server on this engine, adjusted by `configure`.
    pub fn server(&self, configure: impl FnOnce(&mut Config)) -> TestServer {
        let redis_url = match self {
            Backend::Memory => None,
            Backend::Redis(redis) => Some(redis.url()),
        };
        TestServer::start(move |config| {
            config.engine.redis_url = redis_url;
            configure(config);
        })
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
    };
}
