//! A connection as everything below the session actor sees it: its id, its bounded outbound
//! queue ([`outbox::Outbox`], the only way anything reaches a client), the response body that
//! writes that queue into the socket ([`outbound_body::OutboundBody`]) and its lifecycle
//! ([`state`]: the close signal every sender shares, and the session's own state machine).
//!
//! It sits below both the session (which creates a connection's queue and answers on it) and
//! the hub (which fans publications into it), so neither depends on the other for it.

mod frame_queue;
pub(crate) mod outbound_body;
pub(crate) mod outbox;
pub(crate) mod state;

use std::sync::Arc;

/// A connection's id as clients see it (a UUID).
pub(crate) type ConnectionId = Arc<str>;
