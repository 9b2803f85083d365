//! The one place that decides whether a connection (or an HTTP caller) may do an action.
//!
//! Today it knows publish API keys and per-connection limits. Authentication at connect (JWT)
//! and per-project authorization slot in here: [`AccessPolicy::principal`] turns credentials
//! into a [`Principal`], [`AccessPolicy::check`] rules on each action. Sessions and HTTP
//! handlers call nothing else.

use std::net::IpAddr;

use crate::protocol::{ErrorCode, RequestError};

/// Who is asking, as far as the gateway knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    /// Presented a valid publish API key (or publishing is open).
    pub can_publish: bool,
}

/// An action to rule on.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    /// Subscribe to a project while already holding `held` subscriptions.
    Subscribe { project_id: &'a str, held: usize },
    /// Publish to a project's subscribers.
    Publish { project_id: &'a str },
    /// Forward a message for a project to an agent queue.
    Forward { project_id: &'a str },
    /// Read a project's audit records.
    ReadAudit { project_id: &'a str },
    /// Read a project's publication history (what its subscribers receive).
    ReadHistory { project_id: &'a str },
}

#[derive(Clone, Debug)]
pub struct AccessPolicy {
    publish_keys: Vec<String>,
    /// No keys configured and bound to loopback: publishing needs no key.
    publish_open: bool,
    max_subscriptions: usize,
}

impl AccessPolicy {
    /// `loopback_only`: every address the server binds is a loopback one.
    pub fn new(publish_keys: Vec<String>, loopback_only: bool, max_subscriptions: usize) -> Self {
        let publish_open = publish_keys.is_empty() && loopback_only;
        AccessPolicy { publish_keys, publish_open, max_subscriptions }
    }

    /// A line for the start-up log saying how publishing is protected.
    pub fn describe(&self) -> &'static str {
        match (self.publish_keys.is_empty(), self.publish_open) {
            (false, _) => "publish API requires a key from PUBLISH_API_KEYS",
            (true, true) => "publish API is OPEN without a key: no PUBLISH_API_KEYS and bound to loopback",
            (true, false) => "publish API is DISABLED: set PUBLISH_API_KEYS to enable it on a non-loopback address",
        }
    }

    /// The principal for an `Authorization` header value (absent: anonymous).
    pub fn principal(&self, authorization: Option<&str>) -> Principal {
        let presented = authorization.and_then(|value| value.strip_prefix("Bearer ")).map(str::trim);
        let key_ok = presented.is_some_and(|key| {
            self.publish_keys.iter().any(|known| constant_time_eq(known.as_bytes(), key.as_bytes()))
        });
        Principal { can_publish: self.publish_open || key_ok }
    }

    /// Whether `principal` may do `action`.
    pub fn check(&self, principal: &Principal, action: Action<'_>) -> Result<(), RequestError> {
        match action {
            Action::Subscribe { held, .. } if held >= self.max_subscriptions => Err(RequestError::new(
                ErrorCode::TooManySubscriptions,
                format!("A connection may hold at most {} subscriptions", self.max_subscriptions),
            )),
            Action::Publish { .. } | Action::ReadAudit { .. } if !principal.can_publish => {
                Err(RequestError::new(ErrorCode::Forbidden, "This needs a publish API key (Authorization: Bearer KEY)"))
            }
            // History is what any subscriber receives, so whoever may subscribe may read it.
            Action::Subscribe { .. }
            | Action::Publish { .. }
            | Action::Forward { .. }
            | Action::ReadAudit { .. }
            | Action::ReadHistory { .. } => Ok(()),
        }
    }
}

impl AccessPolicy {
    /// Whether the HTTP API needs no credentials (no PUBLISH_API_KEYS, bound to loopback).
    pub fn publish_open(&self) -> bool {
        self.publish_open
    }

    /// The API's rules for requests that carry no credentials because none are needed (open
    /// mode). A web page in the user's browser can reach a loopback server too, so there
    /// the request must be addressed to a loopback `Host` (a DNS-rebound name is not), and a body
    /// must be declared `application/json` (a cross-site `text/plain` or form POST is sent
    /// without a CORS preflight; a JSON one is not). `content_type` is None for a request
    /// without a body.
    pub fn check_open_request(
        &self,
        host: Option<&str>,
        content_type: Option<&str>,
        has_body: bool,
    ) -> Result<(), OpenRequestRefusal> {
        if !self.publish_open {
            return Ok(());
        }
        if !host.is_some_and(is_loopback_host) {
            return Err(OpenRequestRefusal::Host);
        }
        let json = content_type.and_then(|value| value.split(';').next()).map(str::trim);
        if has_body && !json.is_some_and(|media| media.eq_ignore_ascii_case("application/json")) {
            return Err(OpenRequestRefusal::ContentType);
        }
        Ok(())
    }
}

/// Why an open-mode API request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenRequestRefusal {
    /// Not addressed to a loopback host name or address.
    Host,
    /// A body not declared as JSON.
    ContentType,
}

impl OpenRequestRefusal {
    pub fn to_request_error(self) -> RequestError {
        match self {
            OpenRequestRefusal::Host => RequestError::new(
                ErrorCode::Forbidden,
                "Without PUBLISH_API_KEYS the API answers only requests addressed to a loopback host \
                 (Host: localhost, 127.0.0.1 or [::1]); set PUBLISH_API_KEYS to use another name",
            ),
            OpenRequestRefusal::ContentType => {
                RequestError::new(ErrorCode::InvalidRequest, "The body must be sent as Content-Type: application/json")
            }
        }
    }
}

/// Whether a `Host` header names this machine: `localhost` (and `*.localhost`, RFC 6761) or a
/// loopback address, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host
            .rsplit_once(':')
            .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host }),
    };
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|address| address.is_loopback())
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: bool = true;
    const ANY: bool = false;

    #[test]
    fn keys_gate_publishing() {
        let policy = AccessPolicy::new(vec!["k1".into(), "k2".into()], ANY, 10);
        assert!(policy.principal(Some("Bearer k2")).can_publish);
        assert!(!policy.principal(Some("Bearer k3")).can_publish);
        assert!(!policy.principal(Some("k1")).can_publish);
        assert!(!policy.principal(None).can_publish);
        let denied = policy.check(&Principal::default(), Action::Publish { project_id: "p" });
        assert_eq!(denied.unwrap_err().code, ErrorCode::Forbidden);
    }

    #[test]
    fn without_keys_publishing_is_open_only_on_loopback() {
        assert!(AccessPolicy::new(vec![], LOOPBACK, 10).principal(None).can_publish);
        assert!(!AccessPolicy::new(vec![], ANY, 10).principal(None).can_publish);
    }

    #[test]
    fn open_mode_takes_only_loopback_hosts_and_declared_json() {
        let open = AccessPolicy::new(vec![], LOOPBACK, 10);
        for host in ["localhost:8080", "127.0.0.1:1", "127.9.9.9", "[::1]:8080", "LOCALHOST", "app.localhost:3000"] {
            assert_eq!(open.check_open_request(Some(host), None, false), Ok(()), "{host}");
        }
        for host in ["evil.example:8080", "127.0.0.1.evil.example", "10.0.0.1", "[::2]:80", ""] {
            assert_eq!(open.check_open_request(Some(host), None, false), Err(OpenRequestRefusal::Host), "{host}");
        }
        assert_eq!(open.check_open_request(None, None, false), Err(OpenRequestRefusal::Host));
        let json = Some("application/json; charset=utf-8");
        assert_eq!(open.check_open_request(Some("localhost"), json, true), Ok(()));
        for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
            let refused = open.check_open_request(Some("localhost"), content_type, true);
            assert_eq!(refused, Err(OpenRequestRefusal::ContentType), "{content_type:?}");
        }
        // With keys, the key is the protection.
        let keyed = AccessPolicy::new(vec!["k".into()], LOOPBACK, 10);
        assert_eq!(keyed.check_open_request(Some("evil.example"), Some("text/plain"), true), Ok(()));
    }

    #[test]
    fn subscription_limit() {
        let policy = AccessPolicy::new(vec![], LOOPBACK, 2);
        let anyone = Principal::default();
        assert!(policy.check(&anyone, Action::Subscribe { project_id: "p", held: 1 }).is_ok());
        let refused = policy.check(&anyone, Action::Subscribe { project_id: "p", held: 2 });
        assert_eq!(refused.unwrap_err().code, ErrorCode::TooManySubscriptions);
    }
}
