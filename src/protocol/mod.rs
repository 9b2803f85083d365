//! The client protocol: JSON text frames in both directions.
//!
//! - [`request`] parses a client frame into a [`request::Request`] (this is where a frame is
//!   parsed and validated; routing happens in `session`).
//! - [`reply`] is everything the server sends, serialized once into shared bytes.
//! - [`errors`] holds the two catalogues, kept apart: request errors ([`errors::ErrorCode`],
//!   the connection stays open) and connection closes ([`errors::CloseCode`]).
//!
//! The full reference, with examples, is `docs/protocol.md`.

pub(crate) mod approvals;
pub(crate) mod errors;
pub(crate) mod reply;
pub(crate) mod request;
pub(crate) mod streams;

pub(crate) use errors::{CloseCode, ErrorCode, RequestError};
pub(crate) use reply::{Publication, Reply, StreamPosition};
pub(crate) use request::{ForwardRequest, PublishRequest, Request, RequestId, SubscribeRequest};

/// Current time as ISO 8601 UTC with microseconds, as the original server's timestamps.
pub(crate) fn now_iso8601() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
