//! What the server sends: replies to requests and publications pushed to subscribers.
//!
//! Each is serialized once into a [`ByteString`]; a publication's bytes are shared by every
//! subscriber's outbound queue (cloning a `ByteString` only bumps a reference count).

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    errors::{ApprovalRefusal, StreamRefusal},
    streams::{StreamMeta, StreamStatus},
    ErrorCode, RequestError, RequestId,
};

/// A publication's place in its project's stream: Centrifugo's model. `offset` grows by one per
/// publication; `epoch` changes when the history was lost, so an old offset means nothing in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

impl StreamPosition {
    /// A publication frame (as [`Publication::to_frame`] encoded it, without a position) with
    /// this position added, without re-serializing it: the frame is a JSON object this crate
    /// wrote, so it ends in `}`. The engines keep and deliver frames spliced this way.
    pub(crate) fn spliced_into(&self, frame: &str) -> ByteString {
        let body = frame.strip_suffix('}').unwrap_or(frame);
        // A string always serializes.
        let epoch = serde_json::to_string(&self.epoch).unwrap_or_else(|_| "\"\"".into());
        ByteString::from(format!("{body},\"offset\":{},\"epoch\":{epoch}}}", self.offset))
    }
}

/// A reply to one request.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Reply<'a> {
    Connected {
        message: &'static str,
        timestamp: String,
        connection_id: &'a str,
    },
    Pong {},
    SubscriptionConfirmed {
        project_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none", flatten)]
        position: Option<&'a StreamPosition>,
    },
    UnsubscriptionConfirmed {
        project_id: &'a str,
    },
    ForwardConfirmed {
        message_id: &'a str,
        sqs_message_id: &'a str,
        queue: &'a str,
    },
    PublishConfirmed {
        project_id: &'a str,
        id: &'a str,
        subscribers: usize,
        #[serde(skip_serializing_if = "Option::is_none", flatten)]
        position: Option<&'a StreamPosition>,
    },
    Authenticated {
        user_id: &'a str,
        /// The token's `exp`, unix seconds: the connection closes with 3005 then (plus the
        /// leeway) unless it authenticates again with a fresh token.
        expires_at: u64,
        /// When to refresh: at 80% of the token's lifetime, unix seconds.
        refresh_at: u64,
    },
    /// A stream was started (or, `status` and `length` given, one of that id exists).
    StreamStarted {
        project_id: &'a str,
        stream_id: &'a str,
        #[serde(flatten)]
        meta: &'a StreamMeta,
        #[serde(skip_serializing_if = "Option::is_none", flatten)]
        position: Option<&'a StreamPosition>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<StreamStatus>,
        #[serde(skip_serializing_if = "Option::is_none")]
        length: Option<u64>,
    },
    /// An append applied (or, `duplicate`, found applied already); `length` after it.
    StreamAppended {
        project_id: &'a str,
        stream_id: &'a str,
        length: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    },
    /// A stream ended at `length`; its end is the publication at `position`.
    StreamEnded {
        project_id: &'a str,
        stream_id: &'a str,
        status: StreamStatus,
        length: u64,
        #[serde(skip_serializing_if = "Value::is_null")]
        data: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none", flatten)]
        position: Option<&'a StreamPosition>,
    },
    /// A cancel reached the stream's agent queue as `message_id` (None: the stream had no agent
    /// and was ended at once).
    CancelRequested {
        project_id: &'a str,
        stream_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
    },
    /// An approval request is pending as `approval_id` (to its asker).
    ApprovalRequested {
        project_id: &'a str,
        approval_id: &'a str,
        expires_at: &'a str,
        #[serde(skip_serializing_if = "Option::is_none", flatten)]
        position: Option<&'a StreamPosition>,
    },
    /// This decision won, and the agent's queue has it as `message_id`.
    ApprovalDecided {
        project_id: &'a str,
        approval_id: &'a str,
        decision: &'a str,
        message_id: &'a str,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
        /// The project a refusal is about, when it is about one.
        #[serde(skip_serializing_if = "Option::is_none")]
        project_id: Option<&'a str>,
        /// `rate_limited`: milliseconds until the request would be accepted.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// An agent-stream refusal: the stream, its length, its status.
        #[serde(skip_serializing_if = "Option::is_none", flatten)]
        stream: Option<&'a StreamRefusal>,
        /// An approval refusal: the request, the decision that won.
        #[serde(skip_serializing_if = "Option::is_none", flatten)]
        approval: Option<&'a ApprovalRefusal>,
    },
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(flatten)]
    reply: &'a Reply<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a RequestId>,
}

impl<'a> Reply<'a> {
    pub(crate) fn error(error: &'a RequestError) -> Self {
        Self::error_about(error, None, None)
    }

    /// An error naming the forward (`message_id`) or the project it is about.
    pub(crate) fn error_about(
        error: &'a RequestError,
        message_id: Option<&'a str>,
        project_id: Option<&'a str>,
    ) -> Self {
        Reply::Error {
            code: error.code,
            message: &error.message,
            message_id,
            project_id,
            retry_after_ms: error.retry_after_ms(),
            stream: error.stream.as_deref(),
            approval: error.approval.as_deref(),
        }
    }

    /// The frame, with the client's `request_id` echoed when it sent one.
    pub(crate) fn to_frame(&self, request_id: Option<&RequestId>) -> ByteString {
        let envelope = Envelope { reply: self, request_id };
        // Serializing these plain structs into a Vec cannot fail: no maps with non-string keys,
        // no Serialize impls that error.
        let json = serde_json::to_string(&envelope).unwrap_or_else(|error| {
            log::error!(error:% = error; "reply serialization failed");
            r#"{"type":"error","code":"internal","message":"reply serialization failed"}"#.to_owned()
        });
        ByteString::from(json)
    }
}

/// A message for a project's subscribers. Built once per publish, whatever its source (HTTP,
/// WebSocket `publish`, agent updates), then encoded once by [`Publication::to_frame`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Publication {
    /// Unique id of the publication (UUID).
    pub id: String,
    pub project_id: String,
    /// The publisher's event type, if it gave one.
    pub event: Option<String>,
    pub data: Value,
    /// When the gateway accepted it, ISO 8601 UTC.
    pub published_at: String,
    /// Place in the project's stream, when the publication went through a history.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub position: Option<StreamPosition>,
}

#[derive(Serialize)]
struct PublicationFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    publication: &'a Publication,
}

impl Publication {
    pub(crate) fn new(project_id: &str, event: Option<String>, data: Value) -> Self {
        Publication {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: project_id.to_owned(),
            event,
            data,
            published_at: super::now_iso8601(),
            position: None,
        }
    }

    /// The frame subscribers receive: `{"type":"message", ...the publication}`.
    pub(crate) fn to_frame(&self) -> ByteString {
        let frame = PublicationFrame { kind: "message", publication: self };
        // A serde_json::Value and plain strings always serialize.
        ByteString::from(serde_json::to_string(&frame).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parsed(frame: ByteString) -> Value {
        serde_json::from_str(&frame).unwrap()
    }

    #[test]
    fn replies_carry_type_and_echo_request_id() {
        let frame = Reply::Pong {}.to_frame(Some(&json!("r1")));
        assert_eq!(parsed(frame), json!({"type": "pong", "request_id": "r1"}));
        let frame = Reply::SubscriptionConfirmed { project_id: "p", recovered: None, position: None }.to_frame(None);
        assert_eq!(parsed(frame), json!({"type": "subscription_confirmed", "project_id": "p"}));
    }

    #[test]
    fn errors_carry_code_and_message() {
        let error = RequestError::invalid_json();
        let frame = Reply::error(&error).to_frame(None);
        assert_eq!(parsed(frame), json!({"type": "error", "code": "invalid_json", "message": "Invalid JSON format"}));
    }

    #[test]
    fn publication_frame_flattens_its_position() {
        let mut publication = Publication::new("p", Some("status".into()), json!({"ok": true}));
        publication.position = Some(StreamPosition { offset: 7, epoch: "ep".into() });
        let frame = parsed(publication.to_frame());
        assert_eq!(frame["type"], "message");
        assert_eq!(frame["project_id"], "p");
        assert_eq!(frame["event"], "status");
        assert_eq!(frame["data"], json!({"ok": true}));
        assert_eq!(frame["offset"], 7);
        assert_eq!(frame["epoch"], "ep");
        let round_trip: Publication = serde_json::from_value(frame).unwrap();
        assert_eq!(round_trip, publication);
    }

    #[test]
    fn positions_are_spliced_into_the_frame() {
        let position = StreamPosition { offset: 12, epoch: "ab\"c".into() };
        let frame = position.spliced_into(r#"{"type":"message","data":{"x":1}}"#);
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["offset"], 12);
        assert_eq!(value["epoch"], "ab\"c");
        assert_eq!(value["data"]["x"], 1);
    }
}
