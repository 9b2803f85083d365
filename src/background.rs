//! The loops that run beside the actors, in groups that one signal stops and that are waited
//! for (the drain stops them: [`crate::lifecycle::drain`]).

use std::{future::Future, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Longest the shutdown waits for a group of loops to notice the stop and end: the updates
/// consumer's publish in progress (during the connections' drain), the EMF loop's last lines.
const LOOPS_STOP_TIMEOUT: Duration = Duration::from_secs(1);

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
