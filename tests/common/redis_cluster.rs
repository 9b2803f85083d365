//! A private Redis Cluster per test: six Debian redis-servers on free loopback ports (three
//! primaries, three replicas), joined by `redis-cli --cluster create`.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{free_port, RedisServer};

/// Three primaries and a replica of each, on loopback; every node killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<_> = (0..6)
            .map(|_| {
                RedisServer::start_with(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                        // The bus port is port + 10000 unless named: a free port past 55535 has none.
                        "--cluster-port",
                        &free_port().to_string(),
                    ]
                    .map(String::from)
                    .to_vec(),
                )
            })
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed (it comes with redis-server)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes };
        cluster.await_ok();
        cluster
    }

    /// Every node's address, comma separated: REDIS_URL with REDIS_CLUSTER=true.
    pub fn url(&self) -> String {
        self.nodes.iter().map(RedisServer::url).collect::<Vec<_>>().join(",")
    }

    /// Waits until every node says `cluster_state:ok` and knows all six nodes, and every replica
    /// is in sync with its primary.
    pub fn await_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.nodes.iter().all(|node| {
                let info: String = node.command(&["CLUSTER", "INFO"]);
                let replication: String = node.command(&["INFO", "replication"]);
                let synced = replication.contains("role:master") || replication.contains("master_link_status:up");
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:6") && synced
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the redis cluster did not reach cluster_state:ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs one command where its key lives (through a cluster connection), or, a command
    /// without arguments (FLUSHALL), on every primary in turn, answering the last primary's reply;
    /// panics on an error reply.
    pub fn command<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let (name, rest) = args.split_first().expect("a command name");
        if rest.is_empty() {
            let primaries = self.nodes.iter().filter(|node| {
                let replication: String = node.command(&["INFO", "replication"]);
                replication.contains("role:master")
            });
            // Every primary runs it: the fold keeps only the last reply.
            return primaries.fold(None, |_, node| Some(node.command(args))).expect("a primary");
        }
        let mut connection =
            redis::cluster::ClusterClient::new(self.nodes.iter().map(RedisServer::url).collect::<Vec<_>>())
                .and_then(|client| client.get_connection())
                .expect("a connection to the test's redis cluster");
        redis::cmd(name).arg(rest).query(&mut connection).unwrap_or_else(|error| panic!("redis {args:?}: {error}"))
    }

    /// The nodes (indices into [`Self::nodes`]) of the primary that owns `key`'s slot and of its
    /// replica.
    pub fn primary_and_replica_of(&self, key: &str) -> (usize, usize) {
        let slot: i64 = self.nodes[0].command(&["CLUSTER", "KEYSLOT", key]);
        let table: String = self.nodes[0].command(&["CLUSTER", "NODES"]);
        let rows: Vec<Vec<&str>> = table.lines().map(|line| line.split(' ').collect()).collect();
        let index_of = |row: &[&str]| {
            let port = row[1].split(['@', ':']).nth(1).and_then(|port| port.parse::<u16>().ok());
            self.nodes.iter().position(|node| Some(node.port) == port).expect("a node of this cluster")
        };
        let owns = |range: &&str| {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            first.parse::<i64>().is_ok_and(|first| first <= slot) && last.parse::<i64>().is_ok_and(|last| slot <= last)
        };
        let primary = rows.iter().find(|row| row[2].contains("master") && row[8..].iter().any(owns)).expect("an owner");
        let replica = rows.iter().find(|row| row[3] == primary[0]).expect("a replica of the owner");
        (index_of(primary), index_of(replica))
    }

    /// Promotes this replica with `CLUSTER FAILOVER` (its primary agreeing) and waits until it
    /// says it is a primary.
    pub fn fail_over_to(&self, replica: usize) {
        let node = &self.nodes[replica];
        node.command::<()>(&["CLUSTER", "FAILOVER"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let replication: String = node.command(&["INFO", "replication"]);
            if replication.contains("role:master") {
                return;
            }
            assert!(Instant::now() < deadline, "the replica was not promoted");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves `key`'s slot, with its keys, from the primary owning it to another primary (by hand,
    /// as `redis-cli --cluster reshard` does it for each slot: IMPORTING and MIGRATING, `MIGRATE`
    /// in batches, then `SETSLOT NODE` on every primary); the index of the new owner.
    pub fn move_slot_of(&self, key: &str) -> usize {
        let slot: i64 = self.nodes[0].command(&["CLUSTER", "KEYSLOT", key]);
        let slot = slot.to_string();
        let (from, _) = self.primary_and_replica_of(key);
        let primaries: Vec<usize> = (0..self.nodes.len())
            .filter(|&index| {
                let replication: String = self.nodes[index].command(&["INFO", "replication"]);
                replication.contains("role:master")
            })
            .collect();
        let to = *primaries.iter().find(|&&index| index != from).expect("another primary");
        let id = |index: usize| self.nodes[index].command::<String>(&["CLUSTER", "MYID"]);
        let (from_id, to_id) = (id(from), id(to));
        self.nodes[to].command::<()>(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        self.nodes[from].command::<()>(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        let port = self.nodes[to].port.to_string();
        loop {
            let keys: Vec<String> = self.nodes[from].command(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            if keys.is_empty() {
                break;
            }
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            self.nodes[from].command::<()>(&migrate);
        }
        for index in std::iter::once(to).chain(primaries.iter().copied().filter(|&index| index != to)) {
            self.nodes[index].command::<()>(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
        to
    }

    /// Kills every node outright (SIGKILL).
    pub fn kill(&mut self) {
        self.nodes.iter_mut().for_each(RedisServer::kill);
    }

    /// Starts every node again, on its ports and with its data, and waits for the cluster.
    pub fn restart(&mut self) {
        self.nodes.iter_mut().for_each(RedisServer::restart);
        self.await_ok();
    }
}
