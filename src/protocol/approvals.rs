//! Human approvals on the wire: the question an agent asks, the decision that wins, and the
//! frames viewers get (`approval_requested`, `approval_resolved`).

use std::time::{SystemTime, UNIX_EPOCH};

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// A Unix time in milliseconds as RFC 3339 UTC.
pub(crate) fn iso8601_of_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A question to people, as asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ApprovalAsk {
    pub approval_id: String,
    /// The agent whose queue gets the decision (pm, dev, qa, ops).
    pub agent: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    pub options: Vec<String>,
    /// Unix milliseconds after which it is decided `expired`.
    pub expires_at_ms: u64,
    pub requested_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// The decision that won.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Decision {
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub decided_at: String,
    /// The queue message that carries it to the agent (re-sent with the same id).
    pub message_id: String,
}

#[derive(Serialize)]
struct Requested<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    project_id: &'a str,
    approval_id: &'a str,
    agent: &'a str,
    #[serde(skip_serializing_if = "Value::is_null")]
    data: &'a Value,
    options: &'a [String],
    expires_at: String,
    requested_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_by: Option<&'a str>,
}

/// `{"type":"approval_requested",...}`, without position.
pub(crate) fn requested_frame(project_id: &str, ask: &ApprovalAsk) -> ByteString {
    let frame = Requested {
        kind: "approval_requested",
        project_id,
        approval_id: &ask.approval_id,
        agent: &ask.agent,
        data: &ask.data,
        options: &ask.options,
        expires_at: iso8601_of_ms(ask.expires_at_ms),
        requested_at: &ask.requested_at,
        requested_by: ask.requested_by.as_deref(),
    };
    // Strings and serde_json values always serialize.
    ByteString::from(serde_json::to_string(&frame).unwrap_or_default())
}

#[derive(Serialize)]
struct Resolved<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    project_id: &'a str,
    approval_id: &'a str,
    decision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
    decided_at: &'a str,
}

/// `{"type":"approval_resolved",...}`, without position.
pub(crate) fn resolved_frame(project_id: &str, approval_id: &str, decision: &Decision) -> ByteString {
    let frame = Resolved {
        kind: "approval_resolved",
        project_id,
        approval_id,
        decision: &decision.decision,
        user_id: decision.user_id.as_deref(),
        comment: decision.comment.as_deref(),
        decided_at: &decision.decided_at,
    };
    ByteString::from(serde_json::to_string(&frame).unwrap_or_default())
}
