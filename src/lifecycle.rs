//! The server's life: its phase ([`Lifecycle`], read by `/ready` and the upgrade handler:
//! starting, ready, draining), and the drain ([`drain`]), the one place where the order of a
//! shutdown is written. It is given what it stops ([`Drained`]), so it depends on the actors
//! and the engine, never on the gateway that holds them.

use std::{
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::Addr;

use crate::{
    background::BackgroundLoops,
    dispatcher::{self, QueueDispatcher},
    engine::Engine,
    hub::{CloseAll, DrainAll, Hub},
    metrics::Metrics,
    persistence::{self, Persistence, RecordSink},
    protocol::CloseCode,
};

/// Extra time after the drain window for the last clients to finish closing.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long the clients closed at once after the window get to be gone.
const CLOSE_ALL_GRACE: Duration = Duration::from_millis(500);
/// Longest the shutdown waits for the queue dispatcher to answer every accepted forward.
const DISPATCHER_FLUSH_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest the shutdown waits for the engine to end its loops (this task's presence removed).
const ENGINE_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest the shutdown waits for the persistence actor to write every buffered record.
const PERSISTENCE_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

#[derive(Clone, Default)]
pub(crate) struct Lifecycle(Arc<AtomicU8>);

impl Lifecycle {
    pub(crate) fn set_ready(&self) {
        // Only from starting: a drain that began first stays a drain.
        let _ = self.0.compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub(crate) fn set_draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == READY
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst) == DRAINING
    }

    pub(crate) fn phase(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            STARTING => "starting",
            READY => "ready",
            _ => "draining",
        }
    }
}

/// What the drain stops, borrowed from the gateway ([`crate::gateway::Gateway::drained`]).
pub(crate) struct Drained<'a> {
    pub lifecycle: &'a Lifecycle,
    pub metrics: &'a Metrics,
    pub intake: &'a BackgroundLoops,
    pub hub: &'a Addr<Hub>,
    pub dispatcher: &'a Addr<QueueDispatcher>,
    pub engine: &'a dyn Engine,
    pub persistence: &'a Addr<Persistence>,
    pub records: &'a RecordSink,
    pub loops: &'a BackgroundLoops,
}

/// The drain, in order:
/// 1. stop intake: `/ready` answers 503, new upgrades are refused, the agent-updates consumer
///    stops (after the update it is publishing);
/// 2. drain connections: every client is told to reconnect (1012), spread over DRAIN_SECONDS,
///    each after its in-flight forwards were answered (bounded); whoever is still connected
///    after the window and a grace period is closed at once; done when the hub's registry is
///    empty (it says so);
/// 3. flush the queue dispatcher: every accepted forward sent (bounded);
/// 4. close the engine: this task's presence leaves, its subscriber and writer stop;
/// 5. flush persistence: every buffered record written (bounded);
/// 6. stop the other background loops and wait for them (the EMF loop prints its last lines).
///
/// Then the caller stops the HTTP server and the process exits 0.
pub(crate) async fn drain(gateway: Drained<'_>, window: Duration) {
    let started = tokio::time::Instant::now();
    gateway.lifecycle.set_draining();
    gateway.metrics.draining.set(1);
    // The consumer finishes the update it is publishing while the connections drain.
    tokio::join!(gateway.intake.stop("intake"), drain_connections(gateway.hub, window, started));

    let flushed = tokio::time::timeout(DISPATCHER_FLUSH_TIMEOUT, gateway.dispatcher.send(dispatcher::Flush)).await;
    if !matches!(flushed, Ok(Ok(()))) {
        log::error!("queue dispatcher did not finish within {DISPATCHER_FLUSH_TIMEOUT:?}; unanswered forwards were not confirmed to clients");
    }
    if tokio::time::timeout(ENGINE_CLOSE_TIMEOUT, gateway.engine.close()).await.is_err() {
        log::error!("engine did not close within {ENGINE_CLOSE_TIMEOUT:?}; this task's presence expires after the TTL");
    }
    let flushed = tokio::time::timeout(PERSISTENCE_FLUSH_TIMEOUT, gateway.persistence.send(persistence::Flush)).await;
    if !matches!(flushed, Ok(Ok(()))) {
        log::error!(records = gateway.records.outstanding(); "records not written before exit");
    }
    gateway.loops.stop("background").await;
    log::info!(elapsed_ms = started.elapsed().as_millis() as u64; "drain complete");
}

/// Step 2 of the drain: returns once the hub's registry is empty, or the window, its grace and
/// the close-all grace are over.
async fn drain_connections(hub: &Addr<Hub>, window: Duration, started: tokio::time::Instant) {
    let (emptied, registry_empty) = tokio::sync::oneshot::channel();
    if hub.send(DrainAll { window, emptied }).await.is_err() {
        log::error!("hub unavailable during drain");
        return;
    }
    let mut registry_empty = std::pin::pin!(registry_empty);
    if tokio::time::timeout_at(started + window + DRAIN_GRACE, registry_empty.as_mut()).await.is_ok() {
        return;
    }
    log::warn!("drain window over, closing the remaining connections");
    let _ = hub.send(CloseAll { code: CloseCode::ServiceRestart }).await;
    if tokio::time::timeout(CLOSE_ALL_GRACE, registry_empty).await.is_err() {
        log::warn!("connections still registered after being closed; exiting without them");
    }
}
