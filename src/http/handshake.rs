//! TCP connections before their first HTTP request is handled: the slowloris guard's
//! bookkeeping.
//!
//! actix-http closes a connection whose first request head has not arrived within
//! HTTP_REQUEST_TIMEOUT_SECS of the accept (answering 408 when part of it came), however
//! slowly it trickles in: the head timer is not reset by reads. So 500 sockets sending a byte a
//! second hold their file descriptors and a few hundred bytes each for that long, never
//! more, and never keep another client from connecting. What this module adds is what an
//! operator sees of it: every accepted connection carries a [`ConnectionWatch`] (inserted by
//! [`watch_connection`]), marked by [`request_arrived`] when its first request head has been
//! parsed. The watch lives until that request is handled (the vendored actix-http hands a
//! connection's data to its first request and keeps none, so a WebSocket does not carry it for
//! its life: vendor/README.md), keeping `pending_handshakes`, or until the connection closes
//! without one; after the timeout, that counts `limit_refusals_total{limit="handshake_timeout"}`.

use std::{
    cell::Cell,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::HttpRequest;

use crate::metrics::Metrics;

/// How much earlier than HTTP_REQUEST_TIMEOUT_SECS after the accept actix-http's head timer may
/// fire: it reckons from a clock it refreshes every 500 ms.
const HEAD_TIMER_EARLINESS: Duration = Duration::from_millis(600);

/// Kept in a connection's data until its first request is handled, or it closes without one.
pub(crate) struct ConnectionWatch {
    metrics: Arc<Metrics>,
    head_deadline: Instant,
    request_seen: Cell<bool>,
}

/// Called for every accepted connection (`HttpServer::on_connect`).
pub(crate) fn watch_connection(
    extensions: &mut actix_web::dev::Extensions,
    metrics: &Arc<Metrics>,
    head_timeout: Duration,
) {
    metrics.pending_handshakes.inc();
    extensions.insert(ConnectionWatch {
        metrics: metrics.clone(),
        head_deadline: Instant::now() + head_timeout.saturating_sub(HEAD_TIMER_EARLINESS),
        request_seen: Cell::new(false),
    });
}

/// Called for every request: the connection's first head arrived in time.
pub(crate) fn request_arrived(request: &HttpRequest) {
    if let Some(watch) = request.conn_data::<ConnectionWatch>() {
        watch.request_seen.set(true);
    }
}

impl Drop for ConnectionWatch {
    fn drop(&mut self) {
        self.metrics.pending_handshakes.dec();
        if !self.request_seen.get() && Instant::now() >= self.head_deadline {
            self.metrics.limit_refused("handshake_timeout");
        }
    }
}
