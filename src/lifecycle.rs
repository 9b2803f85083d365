//! The server's phase, read by `/ready` and the upgrade handler: starting, ready, draining.

use std::sync::{
    atomic::{AtomicU8, Ordering},
    Arc,
};

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
