//! A connection's agent-stream requests, applied one after another in the order its frames came:
//! "appends to one stream apply in the order the gateway accepts them", and an agent pipelines
//! its appends without waiting for answers. Each request is a future run by one task per
//! connection (started with the connection's first stream request, ended with the connection);
//! the answers go straight into the connection's outbox.
//!
//! **Bound**: MAX_INFLIGHT_PER_CONNECTION requests queued at once; past it a request is refused
//! with `busy` (like a forward), so a connection cannot queue without limit.

use std::sync::Arc;

use bytestring::ByteString;
use futures_util::future::LocalBoxFuture;
use tokio::sync::mpsc;

use crate::{
    connection::outbox::Outbox,
    metrics::Metrics,
    protocol::{ErrorCode, Reply, RequestError, RequestId},
};

/// A request's answer: the frame, its kind for the metrics, and the error code when it is one.
type Answer = Option<(ByteString, &'static str, Option<ErrorCode>)>;

/// The queue of one connection's stream requests.
pub(super) struct StreamRequests {
    queue: mpsc::Sender<LocalBoxFuture<'static, Answer>>,
}

impl StreamRequests {
    /// Starts the connection's task.
    pub(super) fn start(outbox: Outbox, metrics: Arc<Metrics>, capacity: usize) -> Self {
        let (queue, mut requests) = mpsc::channel::<LocalBoxFuture<'static, Answer>>(capacity.max(1));
        actix::spawn(async move {
            while let Some(request) = requests.recv().await {
                let Some((frame, kind, code)) = request.await else { continue };
                if outbox.push_text(frame).is_ok() {
                    match code {
                        Some(code) => metrics.error_sent(code),
                        None => metrics.frame_out(kind),
                    }
                }
            }
        });
        StreamRequests { queue }
    }

    /// Queues a request behind the connection's others; its success is answered with `answer`
    /// (a `kind` frame) when `answered`, a refusal always.
    pub(super) fn queue<T: 'static>(
        &self,
        request: impl std::future::Future<Output = Result<T, RequestError>> + 'static,
        (answer, kind): (for<'a> fn(&'a T) -> Reply<'a>, &'static str),
        answered: bool,
        request_id: Option<RequestId>,
    ) -> Result<(), RequestError> {
        let answered = Box::pin(async move {
            match request.await {
                Ok(done) if answered => Some((answer(&done).to_frame(request_id.as_ref()), kind, None)),
                Ok(_) => None,
                Err(error) => Some((Reply::error(&error).to_frame(request_id.as_ref()), "error", Some(error.code))),
            }
        });
        self.queue
            .try_send(answered)
            .map_err(|_| RequestError::busy("This connection has MAX_INFLIGHT_PER_CONNECTION stream requests waiting"))
    }
}
