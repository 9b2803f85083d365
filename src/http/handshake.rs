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
//! parsed. Until that request is handled (a [`FirstRequest`] in its extensions), or the
//! connection closes without one, it counts in `pending_handshakes`; closed without one after the
//! timeout, it counts `limit_refusals_total{limit="handshake_timeout"}`.
//!
//! The watch also holds the connection's place among its address's connections that are not
//! WebSockets ([`HttpConnectionPermit`]: MAX_CONNECTIONS_PER_IP of them per TCP peer): sockets in
//! their first request, and HTTP connections kept alive for more. Each may hold a request head
//! of up to 16 KiB (the vendored actix-http answers 431 past it) for up to the timeout (the
//! vendored actix-http times every head, not only the first), so the cap bounds what one address
//! can pin. The watch lives as long as the connection's data: until the connection closes, or
//! until its upgrade request is handled (the vendored actix-http hands the data to an upgrade
//! request and keeps none, so a WebSocket does not carry it for its life: vendor/README.md).
//! A connection over the cap is closed at the accept, without an answer ([`refuse_at_accept`]
//! says why none), and counted in `limit_refusals_total{limit="http_per_ip"}`; a request of
//! it that had already arrived is not executed ([`request_arrived`]).

use std::{
    any::Any,
    cell::Cell,
    net::Shutdown,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::{HttpMessage, HttpRequest, HttpResponse};

use crate::{
    access::{connections::HttpConnectionPermit, AccessPolicy},
    metrics::Metrics,
    protocol::RequestError,
};

/// How much earlier than HTTP_REQUEST_TIMEOUT_SECS after the accept actix-http's head timer may
/// fire: it reckons from a clock it refreshes every 500 ms.
const HEAD_TIMER_EARLINESS: Duration = Duration::from_millis(600);

/// Kept in a connection's data: until the connection closes, or its upgrade request is handled.
pub(crate) struct ConnectionWatch {
    metrics: Arc<Metrics>,
    head_deadline: Instant,
    request_seen: Cell<bool>,
    /// The connection's place among its address's connections that are not WebSockets (None for
    /// a trusted proxy's connection, or one that is not TCP); given back when the watch is
    /// dropped.
    permit: Option<HttpConnectionPermit>,
}

/// In the extensions of a connection's first request: it leaves `pending_handshakes` when that
/// request is handled (dropped with it).
struct FirstRequest(Arc<Metrics>);

impl Drop for FirstRequest {
    fn drop(&mut self) {
        self.0.pending_handshakes.dec();
    }
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
    let permit = match peer.map(|peer| policy.admit_http_connection(peer)).transpose() {
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
        if !watch.request_seen.replace(true) {
            request.extensions_mut().insert(FirstRequest(watch.metrics.clone()));
        }
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
        if self.request_seen.get() {
            return;
        }
        self.metrics.pending_handshakes.dec();
        if Instant::now() >= self.head_deadline {
            self.metrics.limit_refused("handshake_timeout");
        }
    }
}
