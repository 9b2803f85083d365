//! Where the Redis engine's commands go: one node (today's engine) or a Redis Cluster
//! (ElastiCache cluster mode, REDIS_CLUSTER=true), behind one [`CommandConnection`] so the
//! scripts, the presence writer and the readers never ask which.
//!
//! On a cluster every key of project P carries the hash tag `{P}`, so each script touches one
//! slot and runs, atomically, on the primary owning it; the redis crate's cluster connection
//! routes each command by its first key, follows `MOVED` and `ASK`, refreshes its slot map when
//! told, and reloads a script (`SCRIPT LOAD` on every primary) a promoted replica does not know.
//! The channel a project's publications travel on, `agenticai:{P}:pub`, hashes to the same slot:
//! on a cluster the scripts publish on it with `SPUBLISH` ([`Channels::Sharded`]), so a message
//! crosses only its shard, where classic `PUBLISH` would cross every node.
//!
//! One pipeline of the presence writer may hold several projects: on a cluster it is split by
//! hash tag and each part sent to its slot's primary, in its order ([`split_by_hash_tag`]).

use std::collections::HashMap;

use futures_util::future::{try_join_all, FutureExt};
use redis::{
    aio::{ConnectionLike, ConnectionManager},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    Cmd, ConnectionInfo, Pipeline, RedisFuture, Script, Value,
};

/// How the engine's scripts announce a publication: `PUBLISH` on one node, `SPUBLISH` (the
/// shard owning the channel's slot) on a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Channels {
    Classic,
    Sharded,
}

impl Channels {
    /// The script `source`, publishing the way these channels take. The sources are written
    /// with `redis.call('PUBLISH', ...)`, which one node runs byte for byte as today.
    pub(crate) fn script(self, source: &str) -> Script {
        match self {
            Channels::Classic => Script::new(source),
            Channels::Sharded => Script::new(&source.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',")),
        }
    }
}

/// Tries of a command on a cluster (the first included) across `MOVED`, `ASK` and lost
/// connections before it fails, and the wait between two (random, growing, within these
/// bounds): a node restarted or a replica promoted is found again within a second or two, and a
/// cluster out of reach answers `unavailable` about as soon as one node does. The redis crate's
/// defaults (16 tries, at least 1.28 s apart) would hold a presence refresh past a short
/// PRESENCE_TTL_SECS and a publish for minutes.
const CLUSTER_TRIES: u32 = 4;
const RETRY_WAIT_MIN_MS: u64 = 50;
const RETRY_WAIT_MAX_MS: u64 = 1000;

/// A cluster client for these seed nodes, as the engine's connections use it.
pub(crate) fn cluster_client(nodes: Vec<ConnectionInfo>) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes)
        .retries(CLUSTER_TRIES - 1)
        .min_retry_wait(RETRY_WAIT_MIN_MS)
        .max_retry_wait(RETRY_WAIT_MAX_MS)
}

/// Where the subscriber connects.
#[derive(Clone)]
pub(crate) enum Seeds {
    /// Boxed: a client is ten times the size of a list of seeds.
    Node(Box<redis::Client>),
    /// The seed nodes REDIS_URL names; the subscriber's own cluster connection learns the rest.
    Cluster(Vec<ConnectionInfo>),
}

impl Seeds {
    pub(crate) fn channels(&self) -> Channels {
        match self {
            Seeds::Node(_) => Channels::Classic,
            Seeds::Cluster(_) => Channels::Sharded,
        }
    }
}

/// The engine's command connection (shared by every clone; each reconnects by itself).
#[derive(Clone)]
pub(crate) enum CommandConnection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for CommandConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            CommandConnection::Node(connection) => connection.req_packed_command(cmd),
            CommandConnection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            CommandConnection::Node(connection) => connection.req_packed_commands(pipeline, offset, count),
            CommandConnection::Cluster(connection) => {
                if pipeline.is_transaction() {
                    return connection.req_packed_commands(pipeline, offset, count);
                }
                let connection = connection.clone();
                async move {
                    let parts = split_by_hash_tag(pipeline);
                    let answers = try_join_all(parts.iter().map(|(_, part)| {
                        let mut connection = connection.clone();
                        async move { connection.req_packed_commands(part, 0, part.len()).await }
                    }))
                    .await?;
                    let mut values = vec![Value::Nil; pipeline.len()];
                    for ((positions, _), answer) in parts.iter().zip(answers) {
                        for (&position, value) in positions.iter().zip(answer) {
                            values[position] = value;
                        }
                    }
                    Ok(values.into_iter().skip(offset).take(count).collect())
                }
                .boxed()
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            CommandConnection::Node(connection) => connection.get_db(),
            CommandConnection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// The pipeline's commands grouped by the hash tag of their first key (commands of one tag
/// share a slot), each group in the pipeline's order, with each command's position in it.
fn split_by_hash_tag(pipeline: &Pipeline) -> Vec<(Vec<usize>, Pipeline)> {
    let mut parts: Vec<(Vec<usize>, Pipeline)> = Vec::new();
    let mut by_tag: HashMap<Vec<u8>, usize> = HashMap::new();
    for (position, cmd) in pipeline.cmd_iter().enumerate() {
        let tag = first_key(cmd).map(|key| hash_tag(&key).to_vec()).unwrap_or_default();
        let part = *by_tag.entry(tag).or_insert_with(|| {
            parts.push((Vec::new(), Pipeline::new()));
            parts.len() - 1
        });
        parts[part].0.push(position);
        parts[part].1.add_command(cmd.clone());
    }
    parts
}

/// The first key of a command: after the key count of `EVAL`/`EVALSHA`, else its first argument.
fn first_key(cmd: &Cmd) -> Option<Vec<u8>> {
    let mut args = cmd.args_iter().filter_map(|arg| match arg {
        redis::Arg::Simple(bytes) => Some(bytes.to_vec()),
        _ => None,
    });
    let name = args.next()?.to_ascii_uppercase();
    if name == b"EVAL" || name == b"EVALSHA" {
        let _script = args.next()?;
        let key_count = args.next()?;
        if key_count == b"0" {
            return None;
        }
    }
    args.next()
}

/// Slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// The slot of a key (or a channel), as Redis Cluster computes it: CRC16 (XMODEM) of its hash
/// tag, modulo [`SLOTS`]. The redis crate routes by it but does not say it.
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    let crc = hash_tag(key).iter().fold(0u16, |crc, &byte| {
        (0..8)
            .fold(crc ^ (u16::from(byte) << 8), |crc, _| if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 })
    });
    crc % SLOTS
}

/// The part of a key Redis Cluster hashes: the first non-empty `{...}`, else the whole key.
fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&byte| byte == b'{') else { return key };
    match key[open + 1..].iter().position(|&byte| byte == b'}') {
        Some(length) if length > 0 => &key[open + 1..open + 1 + length],
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_follow_redis_cluster_rules() {
        assert_eq!(hash_tag(b"agenticai:{p1}:stream"), b"p1");
        assert_eq!(hash_tag(b"plain"), b"plain");
        assert_eq!(hash_tag(b"a{}b{c}"), b"a{}b{c}", "an empty tag hashes the whole key");
    }

    #[test]
    fn slots_are_redis_clusters() {
        // The check value of CRC16/XMODEM, and slots `CLUSTER KEYSLOT` answers.
        assert_eq!(slot_of(b"123456789"), 0x31c3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"agenticai:{foo}:pub"), 12182);
    }

    #[test]
    fn a_pipeline_splits_by_project_keeping_each_projects_order() {
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA").arg("sha").arg(1).arg("agenticai:{a}:presence").arg("join");
        pipe.cmd("EVALSHA").arg("sha").arg(1).arg("agenticai:{b}:presence").arg("join");
        pipe.cmd("EVALSHA").arg("sha").arg(1).arg("agenticai:{a}:presence").arg("leave");
        let parts = split_by_hash_tag(&pipe);
        let positions: Vec<_> = parts.iter().map(|(positions, _)| positions.clone()).collect();
        assert_eq!(positions, vec![vec![0, 2], vec![1]]);
    }

    #[test]
    fn sharded_scripts_publish_with_spublish() {
        let source = "redis.call('PUBLISH', ARGV[1], 'x')";
        assert_eq!(Channels::Classic.script(source).get_hash(), Script::new(source).get_hash());
        let sharded = Script::new("redis.call('SPUBLISH', ARGV[1], 'x')");
        assert_eq!(Channels::Sharded.script(source).get_hash(), sharded.get_hash());
    }
}
