//! The Redis subscriber: one loop per task. It keeps one pub/sub connection, subscribed to the
//! channel of every project the hub follows ([`Interest`], from [`Engine::subscribe`] and
//! [`Engine::unsubscribe`]), and hands each publication to [`LocalDelivery`] in channel order
//! (and each join or leave event, which travels on the same channel), waiting for each to be
//! fanned out, so a busy hub slows this connection rather than growing a queue here.
//!
//! Appends to agent streams travel on the same channel (`a:` messages) and are handed over in
//! the same order; one lost while the connection was down shows as a gap in the stream's lengths,
//! which the hub repairs by reading the stream again.
//!
//! It keeps the last position it delivered of each project it follows ([`Followed`]) and drops
//! repeats. When the connection drops it marks Redis down (`/ready` answers 503, the
//! `agenticai_ws_redis_connected` gauge goes to 0), reconnects with jittered backoff,
//! resubscribes, and fills the gap: for each project it reads the history after the last
//! position it delivered and hands that over first. A publication that arrives both ways is
//! delivered once, in order. The node is also reported as one shard holding every slot in the
//! per-shard series ([`super::shards::one_node_is`]), so dashboards read one node and a cluster
//! alike.
//!
//! On a Redis Cluster the loop is [`super::sharded_subscriber`]'s, which shares this file's
//! bookkeeping ([`Followed`]), delivery and gap filling.
//!
//! **Channel bound**: the changes of interest come from the hub, one per project gained or
//! lost, into an unbounded channel: bounded by the number of subscribe and unsubscribe requests
//! the hub accepted, and never dropped (a lost one would leave a channel subscribed or, worse,
//! unsubscribed).
//!
//! [`Engine::subscribe`]: crate::engine::Engine::subscribe
//! [`Engine::unsubscribe`]: crate::engine::Engine::unsubscribe

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures_util::{future::BoxFuture, FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{channel, cluster::Seeds, project_of_channel, shards, ChannelMessage, RedisEngine};
use crate::{
    engine::{positions::covers, presence::Change, Health, LocalDelivery},
    metrics::Metrics,
    protocol::{request::ProjectId, StreamPosition},
};

pub(super) const RECONNECT_BASE: Duration = Duration::from_millis(100);
pub(super) const RECONNECT_CAP: Duration = Duration::from_secs(5);

/// The pub/sub connection's state: not yet connected, up, or lost.
#[derive(Clone)]
pub(crate) struct RedisHealth(Arc<AtomicU8>);

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl Default for RedisHealth {
    fn default() -> Self {
        RedisHealth(Arc::new(AtomicU8::new(CONNECTING)))
    }
}

impl RedisHealth {
    pub(crate) fn get(&self) -> Health {
        match self.0.load(Ordering::SeqCst) {
            UP => Health::Up,
            DOWN => Health::Lost,
            _ => Health::Connecting,
        }
    }

    pub(super) fn set(&self, up: bool, metrics: &Metrics) {
        self.0.store(if up { UP } else { DOWN }, Ordering::SeqCst);
        metrics.redis_connected.set(i64::from(up));
    }
}

/// A change of the projects the hub follows.
#[derive(Debug)]
pub(crate) enum Interest {
    /// Answered once the project's channel is subscribed (or, while Redis is unreachable, will
    /// be as the connection comes back), so a history read after it cannot miss a publication.
    Gained(ProjectId, oneshot::Sender<()>),
    Lost(ProjectId),
}

/// The hub's changes of interest, queued for the subscriber loop.
pub(crate) struct Subscriptions {
    /// Held by every clone of the engine, so the channel stays open as long as the loop runs;
    /// the loop ends on the engine's shutdown token instead.
    commands: mpsc::UnboundedSender<Interest>,
    /// Taken by [`Subscriptions::subscriber`] when the engine starts.
    pending: Mutex<Option<mpsc::UnboundedReceiver<Interest>>>,
}

impl Default for Subscriptions {
    fn default() -> Self {
        let (commands, pending) = mpsc::unbounded_channel();
        Subscriptions { commands, pending: Mutex::new(Some(pending)) }
    }
}

impl Subscriptions {
    pub(crate) fn send(&self, interest: Interest) {
        // Refused only once the loop ended (the engine closed): an unanswered `Gained` then
        // resolves its subscribe at once.
        let _ = self.commands.send(interest);
    }

    /// The subscriber loop, once (None when it runs already); it ends when `shutdown` is
    /// cancelled.
    pub(crate) fn subscriber(
        &self,
        engine: RedisEngine,
        delivery: Arc<dyn LocalDelivery>,
        shutdown: CancellationToken,
    ) -> Option<impl Future<Output = ()>> {
        let commands = self.pending.lock().ok()?.take()?;
        Some(async move {
            let running = async {
                match engine.seeds().clone() {
                    Seeds::Node(client) => run(&engine, &client, &*delivery, commands).await,
                    Seeds::Cluster(nodes) => {
                        super::sharded_subscriber::run(&engine, nodes, &*delivery, commands).await;
                    }
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {}
                () = running => {}
            }
        })
    }
}

/// The projects this task follows, each with the last position delivered (None before the
/// first): what a repeat is, and where a gap starts after a reconnect.
#[derive(Default)]
pub(super) struct Followed(HashMap<ProjectId, Option<StreamPosition>>);

impl Followed {
    /// Whether a publication at `position` is due for the project's subscribers here: the
    /// project is followed and the position is past the last one delivered (or in another
    /// epoch). It then becomes the last one delivered.
    fn advance(&mut self, project_id: &str, position: &StreamPosition) -> bool {
        let Some(last) = self.0.get_mut(project_id) else { return false };
        if let Some(last) = last {
            if last.epoch == position.epoch && position.offset <= last.offset {
                return false;
            }
        }
        *last = Some(position.clone());
        true
    }

    /// The followed projects that delivered something, and the last position each delivered.
    fn delivered(&self) -> Vec<(ProjectId, StreamPosition)> {
        self.0.iter().filter_map(|(project, last)| Some((project.clone(), last.clone()?))).collect()
    }

    /// The project, when followed.
    pub(super) fn followed(&self, project_id: &str) -> Option<ProjectId> {
        Some(self.0.get_key_value(project_id)?.0.clone())
    }

    /// The projects followed.
    pub(super) fn projects(&self) -> impl Iterator<Item = &ProjectId> {
        self.0.keys()
    }

    /// The last position delivered of a followed project (None before the first, or when not
    /// followed).
    pub(super) fn last_delivered(&self, project_id: &str) -> Option<StreamPosition> {
        self.0.get(project_id)?.clone()
    }

    /// Applies a change of interest, and to the live connection when there is one.
    pub(super) async fn apply(&mut self, interest: Interest, sink: Option<&mut dyn ChannelSink>) {
        match interest {
            Interest::Gained(project_id, subscribed) => {
                if let Some(sink) = sink {
                    if let Err(error) = sink.join(channel(&project_id)).await {
                        log::warn!(project_id = &*project_id, error:% = error; "redis subscribe failed");
                    }
                }
                self.0.entry(project_id).or_insert(None);
                let _ = subscribed.send(());
            }
            Interest::Lost(project_id) => {
                if let Some(sink) = sink {
                    let _ = sink.leave(channel(&project_id)).await;
                }
                self.0.remove(&project_id);
            }
        }
    }
}

/// Where a project's channel is subscribed: the one pub/sub connection of a single node, or the
/// shards of a cluster.
pub(super) trait ChannelSink: Send {
    fn join(&mut self, channel: String) -> BoxFuture<'_, redis::RedisResult<()>>;
    fn leave(&mut self, channel: String) -> BoxFuture<'_, redis::RedisResult<()>>;
}

impl ChannelSink for redis::aio::PubSubSink {
    fn join(&mut self, channel: String) -> BoxFuture<'_, redis::RedisResult<()>> {
        self.subscribe(channel).boxed()
    }

    fn leave(&mut self, channel: String) -> BoxFuture<'_, redis::RedisResult<()>> {
        self.unsubscribe(channel).boxed()
    }
}

async fn run(
    engine: &RedisEngine,
    client: &redis::Client,
    delivery: &dyn LocalDelivery,
    mut commands: mpsc::UnboundedReceiver<Interest>,
) {
    let metrics = &*engine.metrics;
    let mark = |up: bool| {
        engine.health.set(up, metrics);
        shards::one_node_is(metrics, up);
    };
    let received = metrics.redis_shard_messages_received.with_label_values(&[shards::EVERY_SLOT]);
    let mut followed = Followed::default();
    let mut attempt = 0;
    loop {
        while let Ok(interest) = commands.try_recv() {
            followed.apply(interest, None).await;
        }
        let pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(error) => {
                if attempt == 0 {
                    log::warn!(error:% = error; "redis pub/sub unavailable, reconnecting with backoff");
                }
                mark(false);
                tokio::time::sleep(crate::aws::backoff(attempt, RECONNECT_BASE, RECONNECT_CAP)).await;
                attempt += 1;
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut subscribed = true;
        for project_id in followed.0.keys() {
            if sink.subscribe(channel(project_id)).await.is_err() {
                subscribed = false;
                break;
            }
        }
        if !subscribed {
            continue;
        }
        fill_gaps(engine, delivery, &mut followed).await;
        if attempt > 0 {
            log::info!(projects = followed.0.len(); "redis pub/sub reconnected and resubscribed");
        }
        mark(true);
        attempt = 0;
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        received.inc();
                        deliver(engine, delivery, &mut followed, &message).await;
                    }
                    None => break,
                },
                interest = commands.recv() => match interest {
                    Some(interest) => followed.apply(interest, Some(&mut sink)).await,
                    None => return,
                },
            }
        }
        mark(false);
        metrics.redis_reconnects.inc();
        log::warn!("redis pub/sub connection lost, reconnecting");
    }
}

/// Bytes of publications each read of [`fill_gaps`] brings in: the gap is handed over a page at
/// a time, so a long outage is never read whole into memory.
const GAP_PAGE_BYTES: usize = 1 << 20;

/// Hands over what was published while the connection was down, a page at a time.
pub(super) async fn fill_gaps(engine: &RedisEngine, delivery: &dyn LocalDelivery, followed: &mut Followed) {
    for (project_id, delivered) in followed.delivered() {
        fill_gap(engine, delivery, followed, &project_id, delivered).await;
    }
}

/// Hands over what the project published after `delivered`, a page at a time.
pub(super) async fn fill_gap(
    engine: &RedisEngine,
    delivery: &dyn LocalDelivery,
    followed: &mut Followed,
    project_id: &ProjectId,
    mut delivered: StreamPosition,
) {
    loop {
        let (top, entries) = match engine.page_after(project_id, delivered.offset, GAP_PAGE_BYTES).await {
            Ok(page) => page,
            Err(error) => {
                log::warn!(project_id = &**project_id, error:% = error; "gap fill failed");
                break;
            }
        };
        if !covers(&delivered, &top, entries.first().map(|(offset, _)| *offset)) {
            log::warn!(project_id = &**project_id; "history no longer covers the outage; subscribers see a gap");
            break;
        }
        for (offset, frame) in entries {
            delivered = StreamPosition { offset, epoch: top.epoch.clone() };
            if followed.advance(project_id, &delivered) {
                delivery.publication(project_id, Some(delivered.clone()), frame).await;
            }
        }
        if delivered.offset >= top.offset {
            break;
        }
    }
}

pub(super) async fn deliver(
    engine: &RedisEngine,
    delivery: &dyn LocalDelivery,
    followed: &mut Followed,
    message: &redis::Msg,
) {
    let channel_name = message.get_channel_name();
    let Some(project) = project_of_channel(channel_name) else { return };
    let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else { return };
    let change = match payload.split_once(':') {
        Some(("join", event)) => Some((Change::Join, event)),
        Some(("leave", event)) => Some((Change::Leave, event)),
        Some(("a", append)) => {
            if followed.0.contains_key(project) {
                deliver_append(delivery, project, append).await;
            }
            return;
        }
        _ => None,
    };
    if let Some((change, event)) = change {
        let Some((connection_id, frame)) = event.split_once(':') else { return };
        if followed.0.contains_key(project) {
            delivery.presence_change(&project.into(), change, connection_id.into(), frame.into()).await;
        }
        return;
    }
    let Some(parsed) = ChannelMessage::parse(payload) else {
        log::warn!(channel = channel_name; "malformed message on a project channel");
        return;
    };
    let latency_ms = chrono::Utc::now().timestamp_millis().saturating_sub(parsed.published_at_ms).max(0);
    engine.metrics.cross_task_latency.observe(latency_ms as f64 / 1000.0);
    // A publication past the next offset: the channel missed some (on a cluster, a subscription
    // that stayed on a demoted primary while it resynced from the new one); they come from the
    // history first. One node's channel never skips one while its connection lasts.
    if let (Some(project_id), Some(last)) = (followed.followed(project), followed.last_delivered(project)) {
        if last.epoch == parsed.position.epoch && parsed.position.offset > last.offset + 1 {
            fill_gap(engine, delivery, followed, &project_id, last).await;
        }
    }
    if followed.advance(project, &parsed.position) {
        let frame = parsed.position.spliced_into(parsed.frame);
        delivery.publication(&project.into(), Some(parsed.position), frame).await;
    }
}

/// An append to a stream, `<stream id>:<length>:<text>` ([`super::streams`]).
async fn deliver_append(delivery: &dyn LocalDelivery, project: &str, append: &str) {
    let mut parts = append.splitn(3, ':');
    let (Some(stream_id), Some(length), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
        log::warn!(project_id = project; "malformed stream append on a project channel");
        return;
    };
    let Ok(length) = length.parse() else { return };
    delivery.stream_append(&project.into(), &stream_id.into(), text.into(), length).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition { offset, epoch: epoch.into() }
    }

    fn following(projects: &[&str]) -> Followed {
        Followed(projects.iter().map(|project| (ProjectId::from(*project), None)).collect())
    }

    #[test]
    fn a_followed_project_is_delivered_each_position_once_in_order() {
        let mut followed = following(&["p"]);
        assert!(followed.advance("p", &at(1, "e")));
        assert!(followed.advance("p", &at(2, "e")));
        assert!(!followed.advance("p", &at(2, "e")), "a repeat (live after a gap fill)");
        assert!(!followed.advance("p", &at(1, "e")), "an older one");
        assert!(followed.advance("p", &at(1, "new")), "another epoch starts over");
        assert_eq!(followed.delivered(), vec![(ProjectId::from("p"), at(1, "new"))]);
    }

    #[test]
    fn a_project_not_followed_is_not_delivered_and_has_no_gap() {
        let mut followed = following(&["p"]);
        assert!(!followed.advance("q", &at(1, "e")));
        assert!(followed.delivered().is_empty(), "nothing delivered yet: nothing to fill");
    }

    #[tokio::test]
    async fn interest_gained_is_answered_and_lost_forgets_the_last_position() {
        let mut followed = Followed::default();
        let (subscribed, answer) = oneshot::channel();
        followed.apply(Interest::Gained("p".into(), subscribed), None).await;
        assert!(answer.await.is_ok(), "answered even without a connection");
        assert!(followed.advance("p", &at(3, "e")));
        followed.apply(Interest::Lost("p".into()), None).await;
        assert!(!followed.advance("p", &at(4, "e")));
        let (subscribed, _answer) = oneshot::channel();
        followed.apply(Interest::Gained("p".into(), subscribed), None).await;
        assert!(followed.advance("p", &at(3, "e")), "followed again: no memory of the old position");
    }
}
