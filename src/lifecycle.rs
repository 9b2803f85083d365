//! The server's life: its phase ([`Lifecycle`], read by `/ready` and the upgrade handler:
//! starting, ready, draining), the loops that run beside the actors ([`BackgroundLoops`]), and
//! the drain ([`drain`]), the one place where the order of a shutdown is written.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    dispatcher,
    gateway::Gateway,
    hub::{CloseAll, DrainAll},
    persistence,
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
/// Longest the shutdown waits for a group of loops to notice the stop and end: the updates
/// consumer's publish in progress (during the connections' drain), the EMF loop's last lines.
const LOOPS_STOP_TIMEOUT: Duration = Duration::from_secs(1);

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

/// A group of loops that run beside the actors, stopped together by one signal and waited for.
/// The gateway has two: the intake (the agent-updates consumer, stopped first so nothing is
/// published once the drain has begun) and the rest (stats sampler, EMF, API-budget sweep, JWKS
/// refresh), stopped last.
#[derive(Clone, Default)]
pub(crate) struct BackgroundLoops {
    /// Cancelled by [`BackgroundLoops::stop`]; each loop holds a clone and ends when it fires.
    stop: CancellationToken,
    /// Every loop spawned through this group; `stop` waits until each has returned.
    tracker: TaskTracker,
}

impl BackgroundLoops {
    /// Runs `work` on the current arbiter until the group stops; it is dropped there, so it must
    /// hold nothing that needs finishing (a loop that does uses [`BackgroundLoops::spawn_with_stop`]).
    pub(crate) fn spawn(&self, work: impl Future<Output = ()> + 'static) {
        self.spawn_with_stop(|stop| async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = work => {}
            }
        });
    }

    /// Runs the loop `start` makes on the current arbiter; it is given the stop signal and must
    /// return soon after it fires, having finished what it was doing.
    pub(crate) fn spawn_with_stop<F: Future<Output = ()> + 'static>(&self, start: impl FnOnce(CancellationToken) -> F) {
        actix_rt::spawn(self.tracker.track_future(start(self.stop.clone())));
    }

    /// Like [`BackgroundLoops::spawn_with_stop`], on another arbiter.
    pub(crate) fn spawn_on<F: Future<Output = ()> + Send + 'static>(
        &self,
        arbiter: &actix_rt::ArbiterHandle,
        start: impl FnOnce(CancellationToken) -> F,
    ) {
        if !arbiter.spawn(self.tracker.track_future(start(self.stop.clone()))) {
            log::error!("a background loop could not start: its arbiter has stopped");
        }
    }

    /// Signals every loop of the group and waits (bounded) until each has returned.
    pub(crate) async fn stop(&self, group: &'static str) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(LOOPS_STOP_TIMEOUT, self.tracker.wait()).await.is_err() {
            log::error!(group, running = self.tracker.len(); "background loops did not stop within {LOOPS_STOP_TIMEOUT:?}");
        }
    }
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
pub(crate) async fn drain(gateway: &Gateway, window: Duration) {
    let started = tokio::time::Instant::now();
    gateway.lifecycle.set_draining();
    gateway.metrics.draining.set(1);
    // The consumer finishes the update it is publishing while the connections drain.
    tokio::join!(gateway.intake.stop("intake"), drain_connections(gateway, window, started));

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
async fn drain_connections(gateway: &Gateway, window: Duration, started: tokio::time::Instant) {
    let (emptied, registry_empty) = tokio::sync::oneshot::channel();
    if gateway.hub.send(DrainAll { window, emptied }).await.is_err() {
        log::error!("hub unavailable during drain");
        return;
    }
    let mut registry_empty = std::pin::pin!(registry_empty);
    if tokio::time::timeout_at(started + window + DRAIN_GRACE, registry_empty.as_mut()).await.is_ok() {
        return;
    }
    log::warn!("drain window over, closing the remaining connections");
    let _ = gateway.hub.send(CloseAll { code: CloseCode::ServiceRestart }).await;
    if tokio::time::timeout(CLOSE_ALL_GRACE, registry_empty).await.is_err() {
        log::warn!("connections still registered after being closed; exiting without them");
    }
}
