//! The storage of a connection's outbound queue: a bounded FIFO of frames between everyone who
//! pushes ([`Outbox`](super::outbox::Outbox) and its clones) and the one body that takes them.
//!
//! Not tokio's mpsc channel: a bounded one allocates its state and a first block of 32 slots as
//! it is made, 1.5 KiB for every connection whether or not anything is ever sent to it (the
//! largest part of an idle connection's memory, docs/benchmarks.md). This queue lives inside the
//! connection's one shared allocation, holds nothing until a frame is queued, and gives a grown
//! buffer back once the body has emptied it. A push is one uncontended lock, as is each batch the
//! body takes.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
};

use super::outbox::Outbound;

/// Slots an emptied buffer keeps (about 40 bytes each): enough for the usual burst of a reply
/// and a delivery or two; a buffer grown past it by a backlog is freed once drained.
const KEPT_SLOTS: usize = 8;

/// Why a frame did not queue.
#[derive(Debug)]
pub(super) enum Refused {
    /// The queue holds its capacity: the frame, back.
    Full(Outbound),
    /// The body stopped taking frames.
    Closed,
}

pub(super) struct FrameQueue {
    capacity: usize,
    state: Mutex<State>,
}

struct State {
    frames: VecDeque<Outbound>,
    /// The pushers alive; at zero the body has nothing more to wait for.
    pushers: usize,
    /// The body stopped taking frames.
    closed: bool,
    /// The body, waiting for a frame.
    waiting: Option<Waker>,
}

impl FrameQueue {
    /// An empty queue of `capacity` frames (at least one) with one pusher.
    pub(super) fn new(capacity: usize) -> Self {
        let state = State { frames: VecDeque::new(), pushers: 1, closed: false, waiting: None };
        FrameQueue { capacity: capacity.max(1), state: Mutex::new(state) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change under the lock is a single queue or field operation: a panic elsewhere
        // cannot leave it half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames queued.
    pub(super) fn len(&self) -> usize {
        self.state().frames.len()
    }

    pub(super) fn push(&self, frame: Outbound) -> Result<(), Refused> {
        let mut state = self.state();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.frames.len() >= self.capacity {
            return Err(Refused::Full(frame));
        }
        state.frames.push_back(frame);
        let waiting = state.waiting.take();
        drop(state);
        if let Some(body) = waiting {
            body.wake();
        }
        Ok(())
    }

    /// Another pusher (a clone of the outbox).
    pub(super) fn add_pusher(&self) {
        self.state().pushers += 1;
    }

    /// A pusher is gone; the last one wakes the body, which then ends the connection.
    pub(super) fn remove_pusher(&self) {
        let mut state = self.state();
        state.pushers -= 1;
        let waiting = if state.pushers == 0 { state.waiting.take() } else { None };
        drop(state);
        if let Some(body) = waiting {
            body.wake();
        }
    }

    /// The next frame; None when there is none now.
    pub(super) fn take(&self) -> Option<Outbound> {
        self.state().pop()
    }

    /// The next frame, Ready(None) once the queue is empty and every pusher gone; Pending (the
    /// body woken by the next push) while it is empty.
    pub(super) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        let mut state = self.state();
        if let Some(frame) = state.pop() {
            return Poll::Ready(Some(frame));
        }
        if state.pushers == 0 {
            return Poll::Ready(None);
        }
        match &mut state.waiting {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waiting => *waiting = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The body stops taking frames: pushes are refused from now on.
    pub(super) fn close(&self) {
        self.state().closed = true;
    }
}

impl State {
    fn pop(&mut self) -> Option<Outbound> {
        let frame = self.frames.pop_front();
        if self.frames.is_empty() && self.frames.capacity() > KEPT_SLOTS {
            self.frames = VecDeque::new();
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use bytestring::ByteString;

    use super::*;

    fn text(frame: Option<Outbound>) -> Option<ByteString> {
        match frame {
            Some(Outbound::Text(text)) => Some(text),
            _ => None,
        }
    }

    struct CountingWaker(AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn frames_come_out_in_order_up_to_the_capacity_and_not_after_a_close() {
        let queue = FrameQueue::new(2);
        assert!(queue.push(Outbound::Text("a".into())).is_ok());
        assert!(queue.push(Outbound::Text("b".into())).is_ok());
        assert!(matches!(queue.push(Outbound::Text("c".into())), Err(Refused::Full(_))));
        assert_eq!(queue.len(), 2);
        assert_eq!(text(queue.take()), Some("a".into()));
        assert_eq!(text(queue.take()), Some("b".into()));
        assert!(queue.take().is_none());
        queue.close();
        assert!(matches!(queue.push(Outbound::Text("d".into())), Err(Refused::Closed)));
    }

    #[test]
    fn a_waiting_body_is_woken_by_a_push_and_ends_with_the_last_pusher() {
        let queue = FrameQueue::new(4);
        let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(queue.poll_take(&mut cx).is_pending());
        queue.push(Outbound::Ping).unwrap();
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "woken by the push");
        assert!(matches!(queue.poll_take(&mut cx), Poll::Ready(Some(Outbound::Ping))));
        queue.add_pusher();
        assert!(queue.poll_take(&mut cx).is_pending());
        queue.remove_pusher();
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "a pusher is left");
        queue.remove_pusher();
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2, "woken by the last pusher's end");
        assert!(matches!(queue.poll_take(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn a_buffer_grown_by_a_backlog_is_given_back_once_drained() {
        let queue = FrameQueue::new(100);
        for _ in 0..64 {
            queue.push(Outbound::Ping).unwrap();
        }
        while queue.take().is_some() {}
        assert_eq!(queue.state().frames.capacity(), 0);
        queue.push(Outbound::Ping).unwrap();
        queue.take();
        assert!(queue.state().frames.capacity() > 0, "a small buffer is kept for the next frames");
    }
}
