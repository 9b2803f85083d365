//! The subscriber on a Redis Cluster: the single-node subscriber's loop ([`super::subscriber`])
//! with sharded pub/sub. Each followed project's channel is subscribed with `SSUBSCRIBE` on the
//! shard owning its slot, through one cluster connection (RESP3, its pushes on one channel): a
//! connection per shard, however many projects.
//!
//! Topology changes, and what the loop does about each:
//! - **A shard drops a channel** (`sunsubscribe` pushed by the server when the channel's slot
//!   moves away, by a reshard or a failover): the project is still followed, so the loop
//!   subscribes it again, which the cluster connection routes to the slot's new owner
//!   (following `MOVED` and refreshing its slot map), then reads the project's history after the
//!   last position it delivered and hands that over first, as after a reconnect.
//! - **A node's connection drops** (a `disconnection` push): once every primary answers a
//!   `PING` (tried at once, then every [`PROBE_PERIOD`]; an unreachable primary makes the
//!   cluster connection refresh its slots, which finds a promoted replica), every followed
//!   channel is subscribed again and every gap filled ([`fill_gaps`]), before the next push is
//!   handed over. Whether Redis is up meanwhile (`/ready`) is the survey's to say
//!   ([`super::shards`], woken by the same push): down only while a shard has no reachable
//!   primary, so a lost replica never makes `/ready` 503.
//! - **A subscription misses publications without dropping** (it stayed on a primary demoted by
//!   `CLUSTER FAILOVER`, which relays nothing until it has resynced from the new one): the next
//!   live publication skips offsets, and [`deliver`] reads the missing ones from the stream first.
//!
//! What is delivered twice (live and from the history) is delivered once: [`Followed`] drops
//! repeats, as on one node.
//!
//! **Channel bound**: the cluster connection pushes into an unbounded channel (the redis crate's
//! push sender); this loop reads it in order, waiting for each delivery like the single-node
//! loop, so a busy hub grows that channel by the publications of the projects this task
//! follows.

use std::{sync::atomic::Ordering, time::Duration};

use futures_util::{future::BoxFuture, FutureExt};
use redis::{
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo},
    ConnectionInfo, Msg, ProtocolVersion, PushInfo, PushKind,
};
use tokio::sync::mpsc;

use super::{
    channel,
    cluster::cluster_client,
    project_of_channel,
    shards::{self, ShardView},
    subscriber::{deliver, fill_gap, fill_gaps, ChannelSink, Followed, Interest, RECONNECT_BASE, RECONNECT_CAP},
    RedisEngine,
};
use crate::engine::LocalDelivery;

/// How often, while a node is lost, the loop checks whether every primary answers again.
const PROBE_PERIOD: Duration = Duration::from_millis(250);

impl ChannelSink for ClusterConnection {
    fn join(&mut self, channel: String) -> BoxFuture<'_, redis::RedisResult<()>> {
        async move { self.ssubscribe(channel).await }.boxed()
    }

    fn leave(&mut self, channel: String) -> BoxFuture<'_, redis::RedisResult<()>> {
        async move { self.sunsubscribe(channel).await }.boxed()
    }
}

pub(super) async fn run(
    engine: &RedisEngine,
    seeds: Vec<ConnectionInfo>,
    delivery: &dyn LocalDelivery,
    mut commands: mpsc::UnboundedReceiver<Interest>,
) {
    let (health, metrics) = (&engine.health, &*engine.metrics);
    let mut followed = Followed::default();
    let (push_sender, pushes) = mpsc::unbounded_channel::<PushInfo>();
    let client =
        match cluster_client(seeds.clone()).use_protocol(ProtocolVersion::RESP3).push_sender(push_sender).build() {
            Ok(client) => client,
            Err(error) => {
                // The seeds were parsed, and connected to, when the engine started.
                log::error!(error:% = error; "redis cluster subscriber cannot start");
                return;
            }
        };
    let mut attempt = 0;
    let mut connection = loop {
        match client.get_async_connection().await {
            Ok(connection) => break connection,
            Err(error) => {
                if attempt == 0 {
                    log::warn!(error:% = error; "redis cluster pub/sub unavailable, reconnecting with backoff");
                }
                health.set(false, metrics);
                while let Ok(interest) = commands.try_recv() {
                    followed.apply(interest, None).await;
                }
                tokio::time::sleep(crate::aws::backoff(attempt, RECONNECT_BASE, RECONNECT_CAP)).await;
                attempt += 1;
            }
        }
    };
    let view = ShardView::default();
    let surveying = shards::survey_forever(engine, &seeds, connection.clone(), &view);
    let following = follow(engine, delivery, &mut followed, &mut connection, commands, pushes, &view);
    tokio::select! {
        () = surveying => {}
        () = following => {}
    }
}

/// The loop: hands over each publication, applies each change of interest, and after a lost
/// node connection subscribes every followed channel again and fills the gaps; ends when the
/// engine's clones are gone or the cluster connection is.
async fn follow(
    engine: &RedisEngine,
    delivery: &dyn LocalDelivery,
    followed: &mut Followed,
    connection: &mut ClusterConnection,
    mut commands: mpsc::UnboundedReceiver<Interest>,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    view: &ShardView,
) {
    let mut whole = false;
    let mut probe = tokio::time::interval(PROBE_PERIOD);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return };
                if push.kind == PushKind::Disconnection {
                    if whole {
                        // The survey says which node, with a WARN when a shard lost its primary
                        // or a replica.
                        log::info!("redis cluster node connection lost; resubscribing once every primary answers");
                        engine.metrics.redis_reconnects.inc();
                    }
                    view.lost.notify_one();
                    // At once, before the publications the reconnected node pushes next: they
                    // then follow the gap's.
                    whole = rejoin(engine, delivery, followed, connection).await;
                } else if !on_push(engine, delivery, followed, connection, push, view).await {
                    whole = false;
                }
            }
            interest = commands.recv() => match interest {
                Some(interest) => followed.apply(interest, Some(&mut *connection)).await,
                None => return,
            },
            _ = probe.tick(), if !whole => {
                whole = rejoin(engine, delivery, followed, connection).await;
            }
        }
        view.whole.store(whole, Ordering::SeqCst);
    }
}

/// When every primary answers: every followed channel subscribed again and every gap filled;
/// whether that is done.
async fn rejoin(
    engine: &RedisEngine,
    delivery: &dyn LocalDelivery,
    followed: &mut Followed,
    connection: &mut ClusterConnection,
) -> bool {
    if !resubscribe_all(connection, followed).await {
        return false;
    }
    fill_gaps(engine, delivery, followed).await;
    log::info!(projects = followed.projects().count(); "redis cluster pub/sub subscribed on every shard");
    true
}

/// Handles one push other than a disconnection; false when a channel could not be subscribed
/// again (the next probe resubscribes everything).
async fn on_push(
    engine: &RedisEngine,
    delivery: &dyn LocalDelivery,
    followed: &mut Followed,
    connection: &mut ClusterConnection,
    push: PushInfo,
    view: &ShardView,
) -> bool {
    match push.kind {
        PushKind::SMessage => {
            if let Some(message) = Msg::from_push_info(push) {
                view.received(message.get_channel_name());
                deliver(engine, delivery, followed, &message).await;
            }
            true
        }
        PushKind::SUnsubscribe => {
            let Some(name) = push.data.first().and_then(|channel| redis::from_redis_value_ref::<String>(channel).ok())
            else {
                return true;
            };
            let Some(project_id) = project_of_channel(&name).and_then(|project| followed.followed(project)) else {
                // Unsubscribed by this task: the hub stopped following the project.
                return true;
            };
            if let Err(error) = connection.ssubscribe(channel(&project_id)).await {
                log::warn!(project_id = &*project_id, error:% = error; "redis shard dropped a channel; resubscribing failed");
                return false;
            }
            log::info!(project_id = &*project_id; "redis shard dropped a channel; resubscribed where its slot lives");
            if let Some(delivered) = followed.last_delivered(&project_id) {
                fill_gap(engine, delivery, followed, &project_id, delivered).await;
            }
            true
        }
        _ => true,
    }
}

/// Every primary answers, and every followed channel is subscribed on its shard.
async fn resubscribe_all(connection: &mut ClusterConnection, followed: &Followed) -> bool {
    let every_primary =
        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::AllSucceeded)));
    if connection.route_command(redis::cmd("PING"), every_primary).await.is_err() {
        return false;
    }
    for project_id in followed.projects() {
        if let Err(error) = connection.ssubscribe(channel(project_id)).await {
            log::debug!(project_id = &**project_id, error:% = error; "redis cluster resubscribe failed; retried");
            return false;
        }
    }
    true
}
