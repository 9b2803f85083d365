//! A forward as it goes onto a queue: the SQS body and message attributes, built once by the
//! session that received it, then sent to SQS or written to the local spool unchanged.

use serde_json::{Map, Value};

use crate::{
    persistence::{records::ForwardAudit, Record},
    protocol::ForwardRequest,
};

use super::routing::AgentRole;

/// One message for an agent queue.
#[derive(Clone, Debug)]
pub(crate) struct QueueMessage {
    pub role: AgentRole,
    pub message_id: String,
    pub project_id: String,
    /// The forward's `type` as the client sent it (attribute `MessageType`).
    pub message_type: String,
    /// When the gateway received it, ISO 8601 UTC (attribute `Timestamp`).
    pub received_at: String,
    pub connection_id: String,
    /// The verified user who asked (the token's `sub`); None for an anonymous connection.
    pub user_id: Option<String>,
    /// The JSON body: the client's request object plus a `gateway` object with what a consumer
    /// needs (connection id, received-at).
    pub body: String,
    /// What the gateway itself tells the agent (attribute `Kind`: `cancel`); None for a
    /// client's forward.
    pub kind: Option<&'static str>,
}

impl QueueMessage {
    /// The audit record of this message, once the queue has it as `sqs_message_id`.
    pub(crate) fn record(&self, sqs_message_id: &str, size: usize) -> Record {
        Record::Forward(ForwardAudit {
            project_id: self.project_id.clone(),
            message_type: self.message_type.clone(),
            queue: self.role.name().to_owned(),
            message_id: self.message_id.clone(),
            sqs_message_id: sqs_message_id.to_owned(),
            size,
            connection_id: self.connection_id.clone(),
            at: self.received_at.clone(),
            user_id: self.user_id.clone(),
        })
    }

    /// `user_id`: the connection's verified user. It is written into the body's `gateway`
    /// object and as the body's `user_id` (replacing whatever the client wrote there), so an
    /// agent reads who asked from the gateway, never from the client's claim.
    pub(crate) fn new(role: AgentRole, forward: ForwardRequest, connection_id: &str, user_id: Option<&str>) -> Self {
        let received_at = crate::protocol::now_iso8601();
        let mut body: Map<String, Value> = forward.body;
        let mut gateway = serde_json::json!({
            "connection_id": connection_id,
            "received_at": received_at,
            "queue": role.name(),
        });
        if let Some(user_id) = user_id {
            gateway["user_id"] = Value::String(user_id.to_owned());
            body.insert("user_id".into(), Value::String(user_id.to_owned()));
        }
        body.insert("gateway".into(), gateway);
        QueueMessage {
            role,
            message_id: forward.message_id,
            project_id: forward.project_id.to_string(),
            message_type: forward.message_type,
            received_at,
            connection_id: connection_id.to_owned(),
            user_id: user_id.map(str::to_owned),
            body: Value::Object(body).to_string(),
            kind: None,
        }
    }

    /// A message of the gateway's own to an agent (`kind`: `cancel`), body `{"kind",...fields}`.
    pub(crate) fn control(
        role: AgentRole,
        kind: &'static str,
        project_id: &str,
        fields: Map<String, Value>,
        connection_id: &str,
        user_id: Option<&str>,
    ) -> Self {
        let mut body = Map::new();
        body.insert("kind".into(), Value::String(kind.to_owned()));
        body.insert("project_id".into(), Value::String(project_id.to_owned()));
        body.extend(fields);
        QueueMessage {
            role,
            message_id: uuid::Uuid::new_v4().to_string(),
            project_id: project_id.to_owned(),
            message_type: kind.to_owned(),
            received_at: crate::protocol::now_iso8601(),
            connection_id: connection_id.to_owned(),
            user_id: user_id.map(str::to_owned),
            body: Value::Object(body).to_string(),
            kind: Some(kind),
        }
    }

    /// The message attributes, as name/value pairs (all of SQS data type String); `UserId` only
    /// for an authenticated connection's forward.
    pub(crate) fn attributes(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("MessageType", self.message_type.as_str()),
            ("Timestamp", &self.received_at),
            ("ProjectId", &self.project_id),
            ("MessageId", &self.message_id),
        ]
        .into_iter()
        .chain(self.user_id.as_deref().map(|user_id| ("UserId", user_id)))
        .chain(self.kind.map(|kind| ("Kind", kind)))
    }

    /// Bytes SQS counts against its payload limit: body plus attribute names, types and values.
    pub(crate) fn payload_size(&self) -> usize {
        self.body.len()
            + self.attributes().map(|(name, value)| name.len() + "String".len() + value.len()).sum::<usize>()
    }
}
