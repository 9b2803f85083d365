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
//!
//! The watch also holds the connection's place among its address's pending handshakes
//! ([`HandshakePermit`]: MAX_CONNECTIONS_PER_IP of them per TCP peer). Each such socket may hold
//! a request head of up to 16 KiB (the vendored actix-http answers 431 past it) for up to the
//! timeout, so the cap bounds what one address can pin. A connection over it is closed at the
//! accept, without an answer ([`refuse_at_accept`] says why none), and counted in
//! `limit_refusals_total{limit="pending_per_ip"}`; a request of it that had already arrived is
//! not executed ([`request_arrived`]).

use std::{
    any::Any,
    cell::Cell,
    net::Shutdown,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::{HttpRequest, HttpResponse};

use crate::{
    access::{connections::HandshakePermit, AccessPolicy},
    metrics::Metrics,
    protocol::RequestError,
};

/// How much earlier than HTTP_REQUEST_TIMEOUT_SECS after the accept actix-http's head timer may
/// fire: it reckons from a clock it refreshes every 500 ms.
const HEAD_TIMER_EARLINESS: Duration = Duration::from_millis(600);

/// Kept in a connection's data until its first request is handled, or it closes without one.
pub(crate) struct ConnectionWatch {
    metrics: Arc<Metrics>,
    head_deadline: Instant,
    request_seen: Cell<bool>,
    /// The connection's place among its address's pending handshakes (None for a trusted
    /// proxy's connection, or one that is not TCP); given back when the watch is dropped.
    permit: Option<HandshakePermit>,
}

/// In the data of a connection refused at the accept: why.
struct RefusedAtAccept(RequestError);

/// Called for every accepted connection (`HttpServer::on_connect`): counts it against its
/// address's pending handshakes, or refuses it there and then.
pub(crate) fn watch_connection(
    connection: &dyn Any,
    extensions: &mut actix_web::dev::Extensions,
    policy: &AccessPolicy,
    metrics: &Arc<Metrics>,
    head_timeout: Duration,
) {
    let stream = connection.downcast_ref::<actix_web::rt::net::TcpStream>();
    let peer = stream.and_then(|stream| stream.peer_addr().ok()).map(|peer| peer.ip());
    let permit = match peer.map(|peer| policy.admit_handshake(peer)).transpose() {
        Ok(permit) => permit.flatten(),
        Err(refusal) => {
            metrics.limit_refused(refusal.label());
            let error = policy.connection_refusal(refusal);
            if let Some(stream) = stream {
                refuse_at_accept(stream);
            }
            extensions.insert(RefusedAtAccept(error));
            return;
        }
    };
    metrics.pending_handshakes.inc();
    extensions.insert(ConnectionWatch {
        metrics: metrics.clone(),
        head_deadline: Instant::now() + head_timeout.saturating_sub(HEAD_TIMER_EARLINESS),
        request_seen: Cell::new(false),
        permit,
    });
}

/// Shuts a socket nothing has been read from down both ways: a FIN goes out, and reads return
/// the end of the stream once what had already arrived is consumed, so actix-http ends the
/// connection at once. No answer is written: a response sent before the client has written its
/// request is an error to HTTP clients (hyper's "unexpected message"), and waiting for the
/// request would hold what the cap is there to bound.
fn refuse_at_accept(stream: &actix_web::rt::net::TcpStream) {
    if let Err(error) = socket2::SockRef::from(stream).shutdown(Shutdown::Both) {
        log::debug!(error:% = error; "a connection refused at the accept was gone already");
    }
}

/// Called for every request: the connection's first head arrived in time. For a connection
/// refused at the accept whose request had arrived whole before the shutdown, the refusal to
/// answer instead of handling it (the answer cannot be written any more; what matters is that
/// the request is not executed).
pub(crate) fn request_arrived(request: &HttpRequest) -> Option<HttpResponse> {
    if let Some(watch) = request.conn_data::<ConnectionWatch>() {
        watch.request_seen.set(true);
    }
    let RefusedAtAccept(error) = request.conn_data::<RefusedAtAccept>()?;
    let mut response = super::error_response(error);
    response.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
    Some(response)
}

impl Drop for ConnectionWatch {
    fn drop(&mut self) {
        // The place first, so whoever sees the gauge fall finds the place free.
        drop(self.permit.take());
        self.metrics.pending_handshakes.dec();
        if !self.request_seen.get() && Instant::now() >= self.head_deadline {
            self.metrics.limit_refused("handshake_timeout");
        }
    }
}
