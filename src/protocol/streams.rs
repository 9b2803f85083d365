//! Agent streams on the wire: the stream's identity and status, and the frames viewers get
//! (`stream_started`, `stream_append`, `stream_ended`, `stream_snapshot`), each encoded once.
//!
//! The end frames are built in two parts so that whoever knows the final length (an engine,
//! inside its atomic step: a Lua script for Redis) completes them: a prefix ending in
//! `"length":`, then the length, then (a snapshot) the text. A position is spliced in after,
//! like any publication's ([`StreamPosition::spliced_into`](super::StreamPosition::spliced_into)).

use std::sync::Arc;

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A stream's id: the server's (a UUID without dashes) or one an agent chose.
pub(crate) type StreamId = Arc<str>;

/// Longest stream id an agent may choose.
pub(crate) const MAX_STREAM_ID_BYTES: usize = 64;

/// Whether `id` may name a stream: 1 to 64 of `A-Z a-z 0-9 . _ -` (it travels inside Redis
/// channel messages and URLs unescaped).
pub(crate) fn is_valid_stream_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_STREAM_ID_BYTES
        && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// A new server-chosen stream id.
pub(crate) fn new_stream_id() -> StreamId {
    uuid::Uuid::new_v4().simple().to_string().into()
}

/// Where a stream is: open, or how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StreamStatus {
    Open,
    Completed,
    Failed,
    Cancelled,
    /// Ended by the gateway: nothing was appended for STREAM_IDLE_TIMEOUT_SECS.
    Abandoned,
}

impl StreamStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Open => "open",
            StreamStatus::Completed => "completed",
            StreamStatus::Failed => "failed",
            StreamStatus::Cancelled => "cancelled",
            StreamStatus::Abandoned => "abandoned",
        }
    }

    /// The status a stored name stands for.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(Value::String(name.to_owned())).ok()
    }

    /// A status an agent may end its stream with (`abandoned` is the gateway's own).
    pub(crate) fn parse_final(name: &str) -> Option<Self> {
        Self::parse(name)
            .filter(|status| matches!(status, StreamStatus::Completed | StreamStatus::Failed | StreamStatus::Cancelled))
    }
}

/// What a stream is about, fixed at its start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StreamMeta {
    /// The agent queue a cancel reaches (pm, dev, qa, ops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    pub started_at: String,
}

#[derive(Serialize)]
struct Head<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    project_id: &'a str,
    stream_id: &'a str,
}

#[derive(Serialize)]
struct Started<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    #[serde(flatten)]
    meta: &'a StreamMeta,
}

#[derive(Serialize)]
struct Append<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    text: &'a str,
    length: u64,
}

#[derive(Serialize)]
struct Ended<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    status: StreamStatus,
    #[serde(skip_serializing_if = "Value::is_null")]
    data: &'a Value,
}

#[derive(Serialize)]
struct SnapshotHead<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    status: StreamStatus,
}

fn encode(value: &impl Serialize) -> String {
    // Strings and serde_json values always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

/// An object's encoding, open for `"length":` to follow.
fn open_for_length(value: &impl Serialize) -> String {
    let mut encoded = encode(value);
    encoded.pop();
    encoded.push_str(",\"length\":");
    encoded
}

/// `{"type":"stream_started",...}`, without its position: a publication of the project.
pub(crate) fn started_frame(project_id: &str, stream_id: &str, meta: &StreamMeta) -> ByteString {
    let head = Head { kind: "stream_started", project_id, stream_id };
    ByteString::from(encode(&Started { head, meta }))
}

/// `{"type":"stream_append",...}`: text appended since the previous one, and the length after.
pub(crate) fn append_frame(project_id: &str, stream_id: &str, text: &str, length: u64) -> ByteString {
    let head = Head { kind: "stream_append", project_id, stream_id };
    ByteString::from(encode(&Append { head, text, length }))
}

/// The live end frame up to its length: `{"type":"stream_ended",...,"length":` (with the end's
/// `data`).
pub(crate) fn ended_prefix(project_id: &str, stream_id: &str, status: StreamStatus, data: &Value) -> String {
    open_for_length(&Ended { head: Head { kind: "stream_ended", project_id, stream_id }, status, data })
}

/// The snapshot frame up to its length: `{"type":"stream_snapshot",...,"length":` (the start's
/// `data` as `data`, the end's as `result`).
pub(crate) fn snapshot_prefix(
    project_id: &str,
    stream_id: &str,
    status: StreamStatus,
    meta: &StreamMeta,
    result: &Value,
) -> String {
    let (head, tail) = snapshot_prefix_around_meta(project_id, stream_id, status, result);
    let meta = encode(meta);
    // The object's members without its braces: `started_at` is always there, so never empty.
    let members = meta.strip_prefix('{').and_then(|meta| meta.strip_suffix('}')).unwrap_or_default();
    format!("{head},{members}{tail}")
}

/// [`snapshot_prefix`] in two parts, for a store that holds the meta as its JSON object (Redis):
/// the prefix is `head`, `,`, the meta's members, `tail`.
pub(crate) fn snapshot_prefix_around_meta(
    project_id: &str,
    stream_id: &str,
    status: StreamStatus,
    result: &Value,
) -> (String, String) {
    let mut head = encode(&SnapshotHead { head: Head { kind: "stream_snapshot", project_id, stream_id }, status });
    head.pop();
    let tail = match result {
        Value::Null => ",\"length\":".to_owned(),
        result => format!(",\"result\":{},\"length\":", encode(result)),
    };
    (head, tail)
}

/// The live end frame, from its prefix.
pub(crate) fn ended_frame(prefix: &str, length: u64) -> String {
    format!("{prefix}{length}}}")
}

/// A snapshot frame, from its prefix: the text comes last.
pub(crate) fn snapshot_frame(prefix: &str, text: &str) -> String {
    format!("{prefix}{},\"text\":{}}}", text.len(), encode(&text))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta() -> StreamMeta {
        StreamMeta {
            agent: Some("dev".into()),
            event: Some("answer".into()),
            data: json!({"task": 1}),
            started_at: "2026-12-07T00:00:00Z".into(),
        }
    }

    #[test]
    fn stream_ids_are_short_and_plain() {
        assert!(is_valid_stream_id("run-42.answer_1"));
        assert!(is_valid_stream_id(&new_stream_id()));
        for refused in ["", "a:b", "a/b", "é", &"x".repeat(65)] {
            assert!(!is_valid_stream_id(refused), "{refused:?}");
        }
    }

    #[test]
    fn only_an_agent_status_ends_a_stream_by_request() {
        assert_eq!(StreamStatus::parse_final("failed"), Some(StreamStatus::Failed));
        assert_eq!(StreamStatus::parse_final("abandoned"), None);
        assert_eq!(StreamStatus::parse_final("open"), None);
        assert_eq!(StreamStatus::parse("abandoned"), Some(StreamStatus::Abandoned));
    }

    #[test]
    fn frames_parse_as_the_protocol_says() {
        let started: Value = serde_json::from_str(&started_frame("p", "s", &meta())).unwrap();
        assert_eq!(
            started,
            json!({"type": "stream_started", "project_id": "p", "stream_id": "s", "agent": "dev",
                   "event": "answer", "data": {"task": 1}, "started_at": "2026-12-07T00:00:00Z"})
        );
        let append: Value = serde_json::from_str(&append_frame("p", "s", "h\u{e9}\"", 4)).unwrap();
        assert_eq!(
            append,
            json!({"type": "stream_append", "project_id": "p", "stream_id": "s", "text": "hé\"", "length": 4})
        );
        let prefix = ended_prefix("p", "s", StreamStatus::Completed, &json!({"tests": "green"}));
        let ended: Value = serde_json::from_str(&ended_frame(&prefix, 12)).unwrap();
        assert_eq!(
            ended,
            json!({"type": "stream_ended", "project_id": "p", "stream_id": "s", "status": "completed",
                   "data": {"tests": "green"}, "length": 12})
        );
        let prefix = snapshot_prefix("p", "s", StreamStatus::Open, &meta(), &Value::Null);
        let snapshot: Value = serde_json::from_str(&snapshot_frame(&prefix, "a\nb")).unwrap();
        assert_eq!(snapshot["type"], "stream_snapshot");
        assert_eq!((snapshot["status"].as_str(), snapshot["length"].as_u64()), (Some("open"), Some(3)));
        assert_eq!((snapshot["text"].as_str(), snapshot["agent"].as_str()), (Some("a\nb"), Some("dev")));
        let prefix = snapshot_prefix("p", "s", StreamStatus::Failed, &meta(), &json!({"exit": 1}));
        let snapshot: Value = serde_json::from_str(&snapshot_frame(&prefix, "")).unwrap();
        assert_eq!((snapshot["result"]["exit"].as_u64(), snapshot["status"].as_str()), (Some(1), Some("failed")));
        assert_eq!(snapshot["started_at"], "2026-12-07T00:00:00Z");
    }
}
