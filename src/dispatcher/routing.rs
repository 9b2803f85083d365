//! Which agent queue a forward goes to, by its `type` (case-insensitive), as the original
//! server routed them. Unknown types are refused, where the original confirmed and dropped them.

use std::fmt;

use crate::protocol::{ErrorCode, RequestError};

/// One of the four agent queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum AgentRole {
    Pm,
    Dev,
    Qa,
    Ops,
}

/// The accepted `type` values of each role, as listed in error messages and docs.
const ROUTES: [(AgentRole, [&str; 3]); 4] = [
    (AgentRole::Pm, ["plan", "planning", "pm"]),
    (AgentRole::Dev, ["code", "develop", "dev"]),
    (AgentRole::Qa, ["test", "qa", "quality"]),
    (AgentRole::Ops, ["deploy", "ops", "operations"]),
];

impl AgentRole {
    pub(crate) const ALL: [AgentRole; 4] = [AgentRole::Pm, AgentRole::Dev, AgentRole::Qa, AgentRole::Ops];

    /// Routes a forward's `type`.
    pub(crate) fn route(message_type: &str) -> Result<AgentRole, RequestError> {
        ROUTES
            .iter()
            .find(|(_, names)| names.iter().any(|name| name.eq_ignore_ascii_case(message_type)))
            .map(|(role, _)| *role)
            .ok_or_else(|| {
                let accepted: Vec<&str> = ROUTES.iter().flat_map(|(_, names)| *names).collect();
                RequestError::new(
                    ErrorCode::UnknownMessageType,
                    format!("Unknown message type: {message_type}; accepted types: {}", accepted.join(", ")),
                )
            })
    }

    /// Short name: queue label in metrics, spool file name, `queue` in confirmations.
    pub(crate) fn name(self) -> &'static str {
        match self {
            AgentRole::Pm => "pm",
            AgentRole::Dev => "dev",
            AgentRole::Qa => "qa",
            AgentRole::Ops => "ops",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AgentRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_every_alias_case_insensitively() {
        for (role, names) in ROUTES {
            for name in names {
                assert_eq!(AgentRole::route(name).unwrap(), role);
                assert_eq!(AgentRole::route(&name.to_uppercase()).unwrap(), role);
            }
        }
    }

    #[test]
    fn unknown_types_name_the_accepted_ones() {
        let error = AgentRole::route("marketing").unwrap_err();
        assert_eq!(error.code, ErrorCode::UnknownMessageType);
        assert!(error.message.contains("marketing"));
        assert!(error.message.contains("plan, planning, pm, code"));
    }

    #[test]
    fn index_matches_position_in_all() {
        for (position, role) in AgentRole::ALL.iter().enumerate() {
            assert_eq!(role.index(), position);
        }
    }
}
