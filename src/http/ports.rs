//! The public port and, with INTERNAL_PORT, the internal one: which routes each serves.
//!
//! Unset, one port serves every route, as before. Set, the operator endpoints (`/metrics`,
//! `/status` and its assets, `/api/v1/stats`) are served on the internal port only, without a
//! key, and answer 404 on the public port, which serves everything else; the internal port
//! serves nothing else (Centrifugo's `internal_port`). It is meant for a network only operators
//! and Prometheus reach: in ECS the task's security group opens it to the VPC, and the load
//! balancer routes only the public port. `/health` and `/ready` stay on the public port, which
//! the load balancer checks.
//!
//! One HTTP server binds both (one set of workers, one App). Which port a request came in on is
//! the address of the listener that accepted it; [`Ports::mark`] writes it into the request's
//! extensions before routing, and the routes' guards ([`on`]) read it.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use actix_web::{dev::ServiceRequest, guard::Guard, HttpMessage, HttpRequest};

/// The port a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Port {
    Public,
    Internal,
}

/// The internal port's listening addresses, once bound; none without INTERNAL_PORT.
pub(crate) struct Ports {
    internal: Option<OnceLock<Vec<SocketAddr>>>,
}

impl Ports {
    /// `internal_port`: whether INTERNAL_PORT is set (its addresses are known once bound).
    pub(crate) fn new(internal_port: bool) -> Arc<Self> {
        Arc::new(Ports { internal: internal_port.then(OnceLock::new) })
    }

    /// Whether the operator endpoints have a port of their own.
    pub(crate) fn has_internal(&self) -> bool {
        self.internal.is_some()
    }

    /// The internal port's addresses, as bound (a port 0 is then known).
    pub(crate) fn set_internal(&self, addresses: Vec<SocketAddr>) {
        if let Some(internal) = &self.internal {
            let _ = internal.set(addresses);
        }
    }

    /// Marks `request` with the port it came in on (only when there are two: with one, no
    /// route asks).
    pub(crate) fn mark(&self, request: &ServiceRequest) {
        let Some(internal) = &self.internal else { return };
        let local = request.app_config().local_addr();
        let port = if internal.get().is_some_and(|addresses| addresses.contains(&local)) {
            Port::Internal
        } else {
            Port::Public
        };
        request.extensions_mut().insert(port);
    }
}

/// Whether `request` came in on the internal port.
pub(crate) fn is_internal(request: &HttpRequest) -> bool {
    request.extensions().get::<Port>() == Some(&Port::Internal)
}

/// A guard passing requests that came in on `port`.
pub(crate) fn on(port: Port) -> impl Guard {
    actix_web::guard::fn_guard(move |context| context.req_data().get::<Port>() == Some(&port))
}
