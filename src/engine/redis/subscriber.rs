//! The Redis subscriber actor: one per task. It keeps one pub/sub connection, subscribed to the
//! channel of every project the hub has local subscribers for, and hands each publication to
//! the hub in channel order (and each join or leave event, which travels on the same channel) (awaiting the hub, so a busy hub slows this connection rather than
//! growing a queue here).
//!
//! When the connection drops it marks Redis down (`/ready` answers 503, the
//! `agenticai_ws_redis_connected` gauge goes to 0), reconnects with jittered backoff,
//! resubscribes, and fills the gap: for each project it reads the history after the last
//! position the hub delivered and hands that over first. The hub drops repeats by offset, so a
//! publication that arrives both ways is delivered once, in order.
//!
//! **Mailbox**: [`ProjectInterest`] changes come from the hub, one per project gained or lost,
//! and are forwarded into an unbounded command channel: bounded by the number of subscribe and
//! unsubscribe requests the hub accepted, and never dropped (a lost one would leave a channel
//! subscribed or, worse, unsubscribed).

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::prelude::*;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{channel, project_of_channel, ChannelMessage, RedisEngine};
use crate::{
    engine::{positions::covers, presence::Change},
    hub::{Deliver, Hub, LastPositions, PresenceEvent, ProjectInterest},
    metrics::Metrics,
    protocol::request::ProjectId,
};

const RECONNECT_BASE: Duration = Duration::from_millis(100);
const RECONNECT_CAP: Duration = Duration::from_secs(5);

/// The pub/sub connection's state: not yet connected, up, or lost. `/ready` reads whether it is
/// up; the hub whether it is known to be down (then a subscribe does not wait on Redis).
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
    pub(crate) fn is_up(&self) -> bool {
        self.0.load(Ordering::SeqCst) == UP
    }

    /// The connection was up and is lost (not merely still connecting at start-up).
    pub(crate) fn is_down(&self) -> bool {
        self.0.load(Ordering::SeqCst) == DOWN
    }

    fn set(&self, up: bool, metrics: &Metrics) {
        self.0.store(if up { UP } else { DOWN }, Ordering::SeqCst);
        metrics.redis_connected.set(i64::from(up));
    }
}

pub(crate) struct RedisSubscriber {
    engine: RedisEngine,
    hub: Addr<Hub>,
    health: RedisHealth,
    metrics: Arc<Metrics>,
    commands: mpsc::UnboundedSender<ProjectInterest>,
    pending: Option<mpsc::UnboundedReceiver<ProjectInterest>>,
}

impl RedisSubscriber {
    pub(crate) fn new(engine: RedisEngine, hub: Addr<Hub>, health: RedisHealth, metrics: Arc<Metrics>) -> Self {
        let (commands, pending) = mpsc::unbounded_channel();
        RedisSubscriber { engine, hub, health, metrics, commands, pending: Some(pending) }
    }
}

impl Actor for RedisSubscriber {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(commands) = self.pending.take() {
            let run = run(self.engine.clone(), self.hub.clone(), commands, self.health.clone(), self.metrics.clone());
            ctx.spawn(run.into_actor(self));
        }
    }
}

impl Handler<ProjectInterest> for RedisSubscriber {
    type Result = ();

    fn handle(&mut self, msg: ProjectInterest, _: &mut Self::Context) {
        // The receiver lives as long as this actor's run loop.
        let _ = self.commands.send(msg);
    }
}

async fn run(
    engine: RedisEngine,
    hub: Addr<Hub>,
    mut commands: mpsc::UnboundedReceiver<ProjectInterest>,
    health: RedisHealth,
    metrics: Arc<Metrics>,
) {
    let mut projects: HashSet<ProjectId> = HashSet::new();
    let mut attempt = 0;
    loop {
        while let Ok(command) = commands.try_recv() {
            apply(&mut projects, command, None).await;
        }
        let pubsub = match engine.client().get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(error) => {
                if attempt == 0 {
                    log::warn!(error:% = error; "redis pub/sub unavailable, reconnecting with backoff");
                }
                health.set(false, &metrics);
                tokio::time::sleep(crate::aws::backoff(attempt, RECONNECT_BASE, RECONNECT_CAP)).await;
                attempt += 1;
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut subscribed = true;
        for project_id in &projects {
            if sink.subscribe(channel(project_id)).await.is_err() {
                subscribed = false;
                break;
            }
        }
        if !subscribed {
            continue;
        }
        fill_gaps(&engine, &hub).await;
        if attempt > 0 {
            log::info!(projects = projects.len(); "redis pub/sub reconnected and resubscribed");
        }
        health.set(true, &metrics);
        attempt = 0;
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => deliver(&hub, &metrics, &message).await,
                    None => break,
                },
                command = commands.recv() => match command {
                    Some(command) => apply(&mut projects, command, Some(&mut sink)).await,
                    None => return,
                },
            }
        }
        health.set(false, &metrics);
        metrics.redis_reconnects.inc();
        log::warn!("redis pub/sub connection lost, reconnecting");
    }
}

/// Applies a change of interest to the set, and to the live connection when there is one.
async fn apply(projects: &mut HashSet<ProjectId>, command: ProjectInterest, sink: Option<&mut redis::aio::PubSubSink>) {
    match command {
        ProjectInterest::Gained(project_id, ack) => {
            if let Some(sink) = sink {
                if let Err(error) = sink.subscribe(channel(&project_id)).await {
                    log::warn!(project_id = &*project_id, error:% = error; "redis subscribe failed");
                }
            }
            projects.insert(project_id);
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
        }
        ProjectInterest::Lost(project_id) => {
            if let Some(sink) = sink {
                let _ = sink.unsubscribe(channel(&project_id)).await;
            }
            projects.remove(&project_id);
        }
    }
}

/// Bytes of publications each read of [`fill_gaps`] brings in: the gap is handed over a page at
/// a time, so a long outage is never read whole into memory.
const GAP_PAGE_BYTES: usize = 1 << 20;

/// Hands the hub what was published while the connection was down, a page at a time.
async fn fill_gaps(engine: &RedisEngine, hub: &Addr<Hub>) {
    let Ok(last_positions) = hub.send(LastPositions).await else { return };
    for (project_id, position) in last_positions {
        let mut delivered = position;
        loop {
            let (top, entries) = match engine.page_after(&project_id, delivered.offset, GAP_PAGE_BYTES).await {
                Ok(page) => page,
                Err(error) => {
                    log::warn!(project_id = &*project_id, error:% = error; "gap fill failed");
                    break;
                }
            };
            if !covers(&delivered, &top, entries.first().map(|(offset, _)| *offset)) {
                log::warn!(project_id = &*project_id; "history no longer covers the outage; subscribers see a gap");
                break;
            }
            for (offset, frame) in entries {
                delivered = crate::protocol::StreamPosition { offset, epoch: top.epoch.clone() };
                let _ = hub.send(Deliver { project_id: project_id.clone(), position: delivered.clone(), frame }).await;
            }
            if delivered.offset >= top.offset {
                break;
            }
        }
    }
}

async fn deliver(hub: &Addr<Hub>, metrics: &Metrics, message: &redis::Msg) {
    let channel_name = message.get_channel_name();
    let Some(project_id) = project_of_channel(channel_name) else { return };
    let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else { return };
    let change = match payload.split_once(':') {
        Some(("join", event)) => Some((Change::Join, event)),
        Some(("leave", event)) => Some((Change::Leave, event)),
        _ => None,
    };
    if let Some((change, event)) = change {
        let Some((connection_id, frame)) = event.split_once(':') else { return };
        let event = PresenceEvent {
            project_id: project_id.into(),
            change,
            connection_id: connection_id.into(),
            frame: frame.into(),
        };
        let _ = hub.send(event).await;
        return;
    }
    let Some(parsed) = ChannelMessage::parse(payload) else {
        log::warn!(channel = channel_name; "malformed message on a project channel");
        return;
    };
    let latency_ms = chrono::Utc::now().timestamp_millis().saturating_sub(parsed.published_at_ms).max(0);
    metrics.cross_task_latency.observe(latency_ms as f64 / 1000.0);
    let frame = crate::engine::positions::with_position(parsed.frame, &parsed.position);
    let _ = hub.send(Deliver { project_id: project_id.into(), position: parsed.position, frame }).await;
}
