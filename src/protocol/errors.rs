//! The two error catalogues of the protocol.
//!
//! A [`RequestError`] answers one request with `{"type":"error","code":...,"message":...}` and
//! leaves the connection open. A [`CloseCode`] ends the connection with a WebSocket close frame.
//! Both are stable: clients may switch on them. `docs/protocol.md` lists them.

use std::fmt;

/// Machine-readable code of an error reply. Serialized as snake_case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    /// The frame is not JSON.
    InvalidJson,
    /// The frame is JSON but not a request object, or a field has the wrong type.
    InvalidRequest,
    /// `action` names nothing the server does.
    UnknownAction,
    /// `project_id` is missing, empty, too long or not a string.
    InvalidProjectId,
    /// The connection already holds the most subscriptions allowed.
    TooManySubscriptions,
    /// A binary frame: the protocol is JSON text.
    BinaryNotSupported,
    /// A forward's `type` routes to no agent queue.
    UnknownMessageType,
    /// The forward could not be delivered to its queue (named by `message_id`).
    ForwardFailed,
    /// The server, or this connection's share of it, is at capacity; retry later.
    Busy,
    /// The request carries no valid credential, or the connection has not authenticated yet
    /// (with JWT_SECRET or JWT_JWKS_URL set, every action but `ping` and `authenticate` needs
    /// it). Over HTTP: 401.
    Unauthorized,
    /// The connection (or HTTP caller) may not do this: publishing without a key, or a token that
    /// does not allow the action on that project. Over HTTP: 403, or 401 when no credential
    /// was presented at all.
    Forbidden,
    /// The server is shutting down; reconnect (to another task).
    Draining,
    /// A dependency (Redis) is down: the request was only partly done (a publish reached local
    /// subscribers only); retry later.
    Unavailable,
    /// Something failed inside the server; the request may be retried.
    Internal,
    /// The connection (or API caller) sends faster than its budget: the request was not
    /// executed; retry after `retry_after_ms`. Over HTTP: 429 with `Retry-After`.
    RateLimited,
    /// This user already holds MAX_CONNECTIONS_PER_USER connections on this task (the answer
    /// to an `authenticate` before close 3504). Over HTTP: 429.
    TooManyConnections,
    /// An append's `at` is not the stream's length (a gap or an overlap): nothing applied; the
    /// error's `length` is where to resume. Over HTTP: 409.
    StreamConflict,
    /// The stream has ended (`status`, `length`): nothing applied. Over HTTP: 409.
    StreamEnded,
    /// No such stream in that project (what another project's stream id gets too). Over HTTP:
    /// 404.
    StreamNotFound,
    /// The append would take the stream past STREAM_MAX_BYTES: nothing applied. Over HTTP: 413.
    StreamTooLarge,
    /// The project has STREAM_MAX_OPEN_PER_PROJECT streams open. Over HTTP: 409.
    TooManyStreams,
    /// No such approval request pending in that project (unknown, or expired). Over HTTP: 404.
    NotFound,
    /// Another decision won first (the error's `decision` and `user_id` name it). Over HTTP: 409.
    AlreadyDecided,
}

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::InvalidProjectId => "invalid_project_id",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::UnknownMessageType => "unknown_message_type",
            ErrorCode::ForwardFailed => "forward_failed",
            ErrorCode::Busy => "busy",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Draining => "draining",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::StreamConflict => "stream_conflict",
            ErrorCode::StreamEnded => "stream_ended",
            ErrorCode::StreamNotFound => "stream_not_found",
            ErrorCode::StreamTooLarge => "stream_too_large",
            ErrorCode::TooManyStreams => "too_many_streams",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyDecided => "already_decided",
        }
    }
}

/// An error answer to one request: a code and a human message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub(crate) struct RequestError {
    pub code: ErrorCode,
    pub message: String,
    /// When the request may be retried, for [`ErrorCode::RateLimited`]: the reply's
    /// `retry_after_ms`, and over HTTP the `Retry-After` header.
    pub retry_after: Option<std::time::Duration>,
    /// The stream a refusal is about, and where it stands (boxed: most errors have none).
    pub stream: Option<Box<StreamRefusal>>,
    /// The approval a refusal is about, and the decision that won it.
    pub approval: Option<Box<ApprovalRefusal>>,
}

/// The fields an approval refusal adds: which request, and the decision that won it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ApprovalRefusal {
    pub approval_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
}

/// The fields an agent-stream refusal adds to the error: which stream, its length now, and its
/// status once ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct StreamRefusal {
    pub stream_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<super::streams::StreamStatus>,
}

impl RequestError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RequestError { code, message: message.into(), retry_after: None, stream: None, approval: None }
    }

    /// The same error, about this approval request.
    pub(crate) fn about_approval(mut self, approval: ApprovalRefusal) -> Self {
        self.approval = Some(Box::new(approval));
        self
    }

    /// The same error, about this stream.
    pub(crate) fn about_stream(mut self, stream: StreamRefusal) -> Self {
        self.stream = Some(Box::new(stream));
        self
    }

    /// A request over its sender's budget, to retry after `retry_after`.
    pub(crate) fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self::new(ErrorCode::RateLimited, message).with_retry_after(retry_after)
    }

    /// The same error, telling the client when to retry.
    pub(crate) fn with_retry_after(mut self, retry_after: std::time::Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// `retry_after` in whole milliseconds, rounded up (0 would invite an immediate retry).
    pub(crate) fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after.map(|after| (after.as_nanos().div_ceil(1_000_000)).max(1) as u64)
    }

    /// The original server's wording, which its clients compare against.
    pub(crate) fn invalid_json() -> Self {
        Self::new(ErrorCode::InvalidJson, "Invalid JSON format")
    }

    /// The original server's wording, which its clients compare against.
    pub(crate) fn unknown_action(action: &str) -> Self {
        Self::new(ErrorCode::UnknownAction, format!("Unknown action: {action}"))
    }

    pub(crate) fn busy(what: &str) -> Self {
        Self::new(ErrorCode::Busy, format!("{what}; retry later"))
    }
}

/// Why the server closed a connection: the WebSocket close code and reason it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum CloseCode {
    /// The client closed, or the server ends an orderly exchange.
    Normal,
    /// The peer broke the WebSocket protocol.
    ProtocolError,
    /// A text message that is not UTF-8 (RFC 6455 8.1 and 7.4.1: "data within a message that
    /// was not consistent with the type of the message").
    InvalidPayload,
    /// A frame (or a message's fragments together) exceeded MAX_FRAME_BYTES.
    MessageTooBig,
    /// The server is draining for a restart or deploy: reconnect, preferably after a short
    /// random delay.
    ServiceRestart,
    /// The client did not read fast enough: its outbound queue went over the limit.
    SlowConsumer,
    /// Nothing was heard from the peer within CLIENT_TIMEOUT_SECS.
    HeartbeatTimeout,
    /// The connection's token expired without a refresh: get a new token, then reconnect.
    TokenExpired,
    /// `authenticate` carried a token that is not valid: do not reconnect with the same token.
    InvalidToken,
    /// No successful `authenticate` within AUTH_TIMEOUT_SECS of connecting.
    AuthenticationTimeout,
    /// The user already holds MAX_CONNECTIONS_PER_USER connections on this task: close one
    /// before opening another (Centrifugo's "connection limit").
    TooManyConnections,
    /// The client kept sending over its rate limit (CLIENT_RATE_CLOSE_AFTER refusals in a row):
    /// an abusive or runaway client; reconnect only after a long pause.
    RateLimitExceeded,
}

impl CloseCode {
    /// Every close code, for the tests that check them all.
    #[cfg(test)]
    pub(crate) const ALL: [CloseCode; 12] = [
        CloseCode::Normal,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
        CloseCode::ServiceRestart,
        CloseCode::SlowConsumer,
        CloseCode::HeartbeatTimeout,
        CloseCode::TokenExpired,
        CloseCode::InvalidToken,
        CloseCode::AuthenticationTimeout,
        CloseCode::TooManyConnections,
        CloseCode::RateLimitExceeded,
    ];

    pub(crate) fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::ServiceRestart => 1012,
            CloseCode::SlowConsumer => 3008,
            CloseCode::HeartbeatTimeout => 3011,
            CloseCode::TokenExpired => 3005,
            CloseCode::InvalidToken => 3500,
            CloseCode::AuthenticationTimeout => 3502,
            CloseCode::TooManyConnections => 3504,
            CloseCode::RateLimitExceeded => 3509,
        }
    }

    /// The close frame's reason text (kept under the 123-byte limit of a control frame).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::InvalidPayload => "text message is not UTF-8",
            CloseCode::MessageTooBig => "frame larger than the server accepts",
            CloseCode::ServiceRestart => "server restarting, reconnect",
            CloseCode::SlowConsumer => "slow consumer: outbound queue full",
            CloseCode::HeartbeatTimeout => "no traffic from client within the timeout",
            CloseCode::TokenExpired => "token expired: get a new token, then reconnect",
            CloseCode::InvalidToken => "invalid token: do not reconnect with it",
            CloseCode::AuthenticationTimeout => "not authenticated in time",
            CloseCode::TooManyConnections => "too many connections for this user",
            CloseCode::RateLimitExceeded => "rate limit exceeded repeatedly: pause before reconnecting",
        }
    }

    /// Whether what is queued for the client goes out before this close: for a drain, for the
    /// token and limit closes, whose reason the last replies explain, and for 3509, which waits
    /// for the answers to the forwards already accepted.
    pub(crate) fn flushes_queue(self) -> bool {
        matches!(
            self,
            CloseCode::ServiceRestart
                | CloseCode::TokenExpired
                | CloseCode::InvalidToken
                | CloseCode::AuthenticationTimeout
                | CloseCode::TooManyConnections
                | CloseCode::RateLimitExceeded
        )
    }

    /// Label for metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "1000_normal",
            CloseCode::ProtocolError => "1002_protocol_error",
            CloseCode::InvalidPayload => "1007_invalid_payload",
            CloseCode::MessageTooBig => "1009_message_too_big",
            CloseCode::ServiceRestart => "1012_service_restart",
            CloseCode::SlowConsumer => "3008_slow_consumer",
            CloseCode::HeartbeatTimeout => "3011_heartbeat_timeout",
            CloseCode::TokenExpired => "3005_token_expired",
            CloseCode::InvalidToken => "3500_invalid_token",
            CloseCode::AuthenticationTimeout => "3502_authentication_timeout",
            CloseCode::TooManyConnections => "3504_too_many_connections",
            CloseCode::RateLimitExceeded => "3509_rate_limit_exceeded",
        }
    }

    /// The close frame's payload.
    pub(crate) fn to_close_reason(self) -> actix_http::ws::CloseReason {
        actix_http::ws::CloseReason {
            code: actix_http::ws::CloseCode::Other(self.code()),
            description: Some(self.reason().to_owned()),
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_control_frame() {
        for code in CloseCode::ALL {
            assert!(code.reason().len() <= 123, "{code:?}");
        }
    }

    #[test]
    fn error_codes_serialize_as_their_names() {
        for code in [ErrorCode::InvalidJson, ErrorCode::TooManySubscriptions, ErrorCode::Busy] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
