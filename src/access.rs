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
    pub fn new(publish_keys: Vec<String>, bind_host: IpAddr, max_subscriptions: usize) -> Self {
        let publish_open = publish_keys.is_empty() && bind_host.is_loopback();
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

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const ANY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

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
    fn subscription_limit() {
        let policy = AccessPolicy::new(vec![], LOOPBACK, 2);
        let anyone = Principal::default();
        assert!(policy.check(&anyone, Action::Subscribe { project_id: "p", held: 1 }).is_ok());
        let refused = policy.check(&anyone, Action::Subscribe { project_id: "p", held: 2 });
        assert_eq!(refused.unwrap_err().code, ErrorCode::TooManySubscriptions);
    }
}
