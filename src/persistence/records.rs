//! What the gateway records, and the single-table key schema it records it under.
//!
//! | item | `pk` | `sk` |
//! |---|---|---|
//! | connection | `CONN#<connection_id>` | `CONN` |
//! | forwarded message | `PROJECT#<project_id>` | `MSG#<received_at>#<message_id>` |
//! | publication | `PROJECT#<project_id>` | `MSG#<published_at>#<publication_id>` |
//! | approval asked, or decided | `PROJECT#<project_id>` | `MSG#<at>#<approval_id>#<event>` |
//!
//! Timestamps are ISO 8601 UTC with microseconds, so `sk` sorts by time: a project's audit,
//! newest first, is one Query on `pk` with `begins_with(sk, "MSG#")`, ScanIndexForward=false.
//! Every item carries `kind` and `ttl` (epoch seconds; DynamoDB's TTL deletes it after).
//! `docs/persistence.md` has the access patterns.

use serde::Serialize;
use serde_json::{Map, Value};

/// One thing to persist.
#[derive(Clone, Debug)]
pub(crate) enum Record {
    Connection(ConnectionRecord),
    Forward(ForwardAudit),
    Publication(PublicationAudit),
    Approval(ApprovalAudit),
}

/// An approval request asked, or decided (by a person, or `expired`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ApprovalAudit {
    pub project_id: String,
    pub approval_id: String,
    /// `requested` or `decided`.
    pub event: &'static str,
    pub agent: String,
    pub decision: Option<String>,
    pub comment: Option<String>,
    /// Who asked (`requested`) or decided (`decided`): the token's `sub`.
    pub user_id: Option<String>,
    pub at: String,
}

/// A connection's life, written when it ends.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ConnectionRecord {
    pub connection_id: String,
    pub opened_at: String,
    pub closed_at: String,
    /// The close code the server sent, or 1000 when the client closed.
    pub close_code: u16,
    /// Why: a close code label, `client_closed` or `connection_lost`.
    pub close_reason: String,
    pub remote_addr: Option<String>,
    pub projects: Vec<String>,
    /// The token's `sub`, for an authenticated connection.
    pub user_id: Option<String>,
}

/// A forward SQS accepted.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ForwardAudit {
    pub project_id: String,
    pub message_type: String,
    pub queue: String,
    pub message_id: String,
    pub sqs_message_id: String,
    pub size: usize,
    pub connection_id: String,
    pub at: String,
    /// Who asked: the token's `sub` of the connection that forwarded it.
    pub user_id: Option<String>,
}

/// A publication pushed to a project's subscribers.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PublicationAudit {
    pub project_id: String,
    pub publication_id: String,
    pub event: Option<String>,
    pub size: usize,
    pub subscribers: usize,
    pub source: String,
    pub at: String,
    pub offset: Option<u64>,
    /// Who published: the token's `sub`, when a token (not a key) authorized it.
    pub user_id: Option<String>,
}

impl Record {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Record::Connection(_) => "connection",
            Record::Forward(_) => "forward",
            Record::Publication(_) => "publication",
            Record::Approval(_) => "approval",
        }
    }

    /// Partition and sort key.
    pub(crate) fn keys(&self) -> (String, String) {
        match self {
            Record::Connection(c) => (format!("CONN#{}", c.connection_id), "CONN".to_owned()),
            Record::Forward(f) => (project_key(&f.project_id), format!("MSG#{}#{}", f.at, f.message_id)),
            Record::Publication(p) => (project_key(&p.project_id), format!("MSG#{}#{}", p.at, p.publication_id)),
            Record::Approval(a) => (project_key(&a.project_id), format!("MSG#{}#{}#{}", a.at, a.approval_id, a.event)),
        }
    }

    /// The item as stored: keys, `kind`, `ttl` and the record's fields.
    pub(crate) fn item(&self, ttl_epoch_seconds: i64) -> Map<String, Value> {
        let fields = match self {
            Record::Connection(c) => serde_json::to_value(c),
            Record::Forward(f) => serde_json::to_value(f),
            Record::Publication(p) => serde_json::to_value(p),
            Record::Approval(a) => serde_json::to_value(a),
        };
        let mut item = match fields {
            Ok(Value::Object(map)) => map,
            // Plain structs of strings and numbers always serialize to an object.
            _ => Map::new(),
        };
        item.retain(|_, value| !value.is_null());
        let (pk, sk) = self.keys();
        item.insert("pk".into(), Value::String(pk));
        item.insert("sk".into(), Value::String(sk));
        item.insert("kind".into(), Value::String(self.kind().into()));
        item.insert("ttl".into(), Value::from(ttl_epoch_seconds));
        item
    }
}

/// The partition key of a project's audit items.
pub(crate) fn project_key(project_id: &str) -> String {
    format!("PROJECT#{project_id}")
}

/// The sort-key prefix of audit items.
pub(crate) const MESSAGE_SORT_PREFIX: &str = "MSG#";

/// A page of a project's audit, newest first.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct AuditPage {
    pub items: Vec<Value>,
    /// Pass back as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_items_sort_by_time_within_a_project() {
        let record = |at: &str, id: &str| {
            Record::Publication(PublicationAudit {
                project_id: "p1".into(),
                publication_id: id.into(),
                event: None,
                size: 10,
                subscribers: 2,
                source: "http".into(),
                at: at.into(),
                offset: None,
                user_id: None,
            })
        };
        let older = record("2026-01-01T00:00:00.000001Z", "b").keys();
        let newer = record("2026-01-01T00:00:00.000002Z", "a").keys();
        assert_eq!(older.0, "PROJECT#p1");
        assert!(older.1 < newer.1);
        assert!(older.1.starts_with(MESSAGE_SORT_PREFIX));
    }

    #[test]
    fn items_carry_keys_kind_and_ttl_but_no_nulls() {
        let item = Record::Publication(PublicationAudit {
            project_id: "p".into(),
            publication_id: "id".into(),
            event: None,
            size: 1,
            subscribers: 0,
            source: "http".into(),
            at: "t".into(),
            offset: None,
            user_id: None,
        })
        .item(99);
        assert_eq!(item["kind"], "publication");
        assert_eq!(item["ttl"], 99);
        assert_eq!(item["pk"], "PROJECT#p");
        assert!(!item.contains_key("event"));
    }
}
