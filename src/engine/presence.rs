//! Presence: which connections are subscribed to a project, on every task, and the join and
//! leave events that follow it. The engines keep it ([`super::Engine::presence_join`],
//! [`super::Engine::presence`]); this module holds what both share: a member as clients see
//! it, encoded once, and the frames built from it.
//!
//! A member is one connection's subscription to a project: `{"connection_id", "user_id",
//! "connected_at", "info"}`, where `user_id` is the token's `sub` (null without a token) and
//! `info` its `info` claim (null without one; at most `MAX_INFO_BYTES`, checked when the token is
//! verified). `num_users` counts distinct user ids; connections without one are not users.
//!
//! Lists are bounded: a `presence` answer lists at most [`PRESENCE_LIST_LIMIT`] members, and
//! says `"truncated": true` when there are more (the counts are always complete). Dashboards of
//! big projects ask `presence_stats`, which never lists.

use std::sync::Arc;

use bytestring::ByteString;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::protocol::{request::ProjectId, RequestId};

/// Most members a presence answer lists (1,000 members of ~200 bytes: a frame of ~200 KiB).
pub(crate) const PRESENCE_LIST_LIMIT: usize = 1000;

/// One connection as presence shows it; built once per connection identity and shared by every
/// project it subscribes to.
#[derive(Debug)]
pub(crate) struct Member {
    pub connection_id: Arc<str>,
    pub user_id: Option<Arc<str>>,
    /// `{"connection_id","user_id","connected_at","info"}`: what lists and events carry.
    pub json: Arc<str>,
}

#[derive(Serialize)]
struct MemberFields<'a> {
    connection_id: &'a str,
    user_id: Option<&'a str>,
    connected_at: &'a str,
    info: Option<&'a RawValue>,
}

impl Member {
    /// `info` is the token's claim as verified: serialized JSON.
    pub(crate) fn new(
        connection_id: Arc<str>,
        user_id: Option<Arc<str>>,
        connected_at: &str,
        info: Option<&str>,
    ) -> Self {
        // A claim that was JSON when verified is JSON now; should it not be, the member is shown
        // without it rather than with a broken frame.
        let info = info.and_then(|info| serde_json::from_str::<&RawValue>(info).ok());
        let fields = MemberFields { connection_id: &connection_id, user_id: user_id.as_deref(), connected_at, info };
        let json = serde_json::to_string(&fields).unwrap_or_else(|_| {
            serde_json::json!({ "connection_id": &*connection_id, "user_id": user_id.as_deref() }).to_string()
        });
        Member { connection_id, user_id, json: json.into() }
    }
}

/// Whether a member came or went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Join,
    Leave,
}

impl Change {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Change::Join => "join",
            Change::Leave => "leave",
        }
    }

    /// `{"type":"join"|"leave","project_id":P,"client":{member}}`, encoded once for every
    /// subscriber that asked for join and leave events, on every task.
    pub(crate) fn frame(self, project_id: &str, member: &Member) -> ByteString {
        let project = serde_json::to_string(project_id).unwrap_or_else(|_| "\"\"".into());
        ByteString::from(format!(r#"{{"type":"{}","project_id":{project},"client":{}}}"#, self.label(), member.json))
    }
}

/// A project's presence as an engine read it.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    pub num_clients: usize,
    pub num_users: usize,
    /// Members as JSON objects, at most [`PRESENCE_LIST_LIMIT`] (none for stats).
    pub clients: Vec<String>,
}

impl Presence {
    /// The answer to `presence` (`listed`) or `presence_stats`, as a frame or an HTTP body
    /// (`kind` None leaves `type` out).
    pub(crate) fn to_json(
        &self,
        kind: Option<&str>,
        project_id: &ProjectId,
        listed: bool,
        request_id: Option<&RequestId>,
    ) -> String {
        #[derive(Serialize)]
        struct Answer<'a> {
            #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
            kind: Option<&'a str>,
            project_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            clients: Option<Vec<&'a RawValue>>,
            num_clients: usize,
            num_users: usize,
            #[serde(skip_serializing_if = "Option::is_none")]
            truncated: Option<bool>,
            #[serde(skip_serializing_if = "Option::is_none")]
            request_id: Option<&'a RequestId>,
        }
        let clients = listed
            .then(|| self.clients.iter().filter_map(|client| serde_json::from_str::<&RawValue>(client).ok()).collect());
        let answer = Answer {
            kind,
            project_id,
            clients,
            num_clients: self.num_clients,
            num_users: self.num_users,
            truncated: listed.then_some(self.clients.len() < self.num_clients),
            request_id,
        };
        // Plain fields and RawValues that parsed: serializing cannot fail.
        serde_json::to_string(&answer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_events_are_json_with_the_token_info() {
        let member = Member::new("c1".into(), Some("alice".into()), "2026-01-01T00:00:00Z", Some(r#"{"name":"A"}"#));
        let value: serde_json::Value = serde_json::from_str(&member.json).unwrap();
        assert_eq!(value["connection_id"], "c1");
        assert_eq!(value["user_id"], "alice");
        assert_eq!(value["info"]["name"], "A");
        let event: serde_json::Value = serde_json::from_str(&Change::Leave.frame("p\"1", &member)).unwrap();
        assert_eq!(event["type"], "leave");
        assert_eq!(event["project_id"], "p\"1");
        assert_eq!(event["client"], value);
    }

    #[test]
    fn lists_say_when_they_are_cut() {
        let presence = Presence { num_clients: 3, num_users: 1, clients: vec![r#"{"connection_id":"a"}"#.into()] };
        let value: serde_json::Value =
            serde_json::from_str(&presence.to_json(Some("presence"), &"p".into(), true, None)).unwrap();
        assert_eq!(value["truncated"], true);
        assert_eq!(value["clients"].as_array().unwrap().len(), 1);
        let stats: serde_json::Value =
            serde_json::from_str(&presence.to_json(Some("presence_stats"), &"p".into(), false, None)).unwrap();
        assert!(stats.get("clients").is_none() && stats.get("truncated").is_none());
        assert_eq!(stats["num_clients"], 3);
    }
}
