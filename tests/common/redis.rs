//! A private Debian redis-server per test, on a free loopback port.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::free_port;

/// A private redis-server on a free loopback port, stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Given to redis-server after the common ones (a cluster node's settings).
    extra_args: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// Started with these arguments besides the common ones.
    pub fn start_with(extra_args: Vec<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = RedisServer { port: free_port(), child: None, dir, extra_args };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts (again) on the same port, with an append-only file so data survives a restart.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server; scripts/test.sh does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it outright (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs one command on a fresh connection and returns its reply as `T`; panics, with the
    /// command, on an error reply or a reply of another type.
    pub fn command<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let (name, rest) = args.split_first().expect("a command name");
        let mut connection = redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("a connection to the test's redis-server");
        redis::cmd(name).arg(rest).query(&mut connection).unwrap_or_else(|error| panic!("redis {args:?}: {error}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
