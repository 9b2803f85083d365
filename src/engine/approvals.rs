//! Human approvals in the engine: an agent's question ("deploy build 142 to prod?") pending
//! until exactly one person answers it or it expires, durable in the engine (Redis with it: they
//! survive any task's restart), and the decision's delivery to the agent's queue tracked until
//! a queue confirmed it, so a live task re-sends one a dead task never delivered.
//!
//! The memory engine's table is [`ApprovalTable`]; the Redis engine keeps the same in Redis
//! ([`super::redis::approvals`]).

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use crate::protocol::{
    approvals::{ApprovalAsk, Decision},
    request::ProjectId,
    StreamPosition,
};

pub(crate) use crate::protocol::approvals::now_ms;

/// What a request did.
#[derive(Debug, PartialEq)]
pub(crate) enum AskOutcome {
    /// Asked; its publication's position.
    Asked(StreamPosition),
    /// A question of that id was asked already (as this): nothing new.
    Existing(ApprovalAsk),
}

/// What a decision found.
#[derive(Debug, PartialEq)]
pub(crate) enum DecideOutcome {
    /// This decision won; the question, for its agent.
    Won(ApprovalAsk),
    /// Another decision won first.
    AlreadyDecided(Decision),
    /// Unknown, expired (and decided so), or not one of its options.
    NotFound,
    /// `decision` is not one of the request's options.
    NotAnOption(Vec<String>),
}

/// A decision whose delivery no queue has confirmed yet, claimed by the task that asks.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Undelivered {
    pub project_id: ProjectId,
    pub ask: ApprovalAsk,
    pub decision: Decision,
}

/// Decided approvals the memory engine keeps per project to answer a late decision with the
/// winner.
const DECIDED_KEPT: usize = 256;

struct Entry {
    ask: ApprovalAsk,
    decision: Option<Decision>,
    delivered: bool,
    /// Unix ms before which nobody re-sends its decision (claimed, or just decided).
    lease_until_ms: u64,
}

/// The memory engine's approvals.
#[derive(Default)]
pub(crate) struct ApprovalTable {
    projects: HashMap<ProjectId, HashMap<String, Entry>>,
    decided_order: HashMap<ProjectId, VecDeque<String>>,
}

impl ApprovalTable {
    /// Keeps a question pending; the one asked already under its id, if any (nothing changes).
    pub(crate) fn request(&mut self, project_id: &ProjectId, ask: &ApprovalAsk) -> Option<ApprovalAsk> {
        let entries = self.projects.entry(project_id.clone()).or_default();
        if let Some(existing) = entries.get(&ask.approval_id) {
            return Some(existing.ask.clone());
        }
        let entry = Entry { ask: ask.clone(), decision: None, delivered: false, lease_until_ms: 0 };
        entries.insert(ask.approval_id.clone(), entry);
        None
    }

    /// Exactly one decision wins; `decision.decision == "expired"` expires a pending one whose
    /// time has come (and only then).
    pub(crate) fn decide(
        &mut self,
        project_id: &ProjectId,
        approval_id: &str,
        decision: &Decision,
        lease: Duration,
    ) -> DecideOutcome {
        let Some(entry) = self.projects.get_mut(project_id).and_then(|entries| entries.get_mut(approval_id)) else {
            return DecideOutcome::NotFound;
        };
        if let Some(winner) = &entry.decision {
            return DecideOutcome::AlreadyDecided(winner.clone());
        }
        let now = now_ms();
        let expiring = decision.decision == "expired";
        if expiring != (now >= entry.ask.expires_at_ms) {
            return DecideOutcome::NotFound;
        }
        if !expiring && !entry.ask.options.contains(&decision.decision) {
            return DecideOutcome::NotAnOption(entry.ask.options.clone());
        }
        entry.decision = Some(decision.clone());
        entry.lease_until_ms = now + lease.as_millis() as u64;
        let order = self.decided_order.entry(project_id.clone()).or_default();
        order.push_back(approval_id.to_owned());
        let ask = entry.ask.clone();
        if order.len() > DECIDED_KEPT {
            if let Some(oldest) = order.pop_front() {
                if let Some(entries) = self.projects.get_mut(project_id) {
                    entries.remove(&oldest);
                }
            }
        }
        DecideOutcome::Won(ask)
    }

    pub(crate) fn delivered(&mut self, project_id: &ProjectId, approval_id: &str) {
        if let Some(entry) = self.projects.get_mut(project_id).and_then(|entries| entries.get_mut(approval_id)) {
            entry.delivered = true;
        }
    }

    /// The project's pending questions, oldest first.
    pub(crate) fn pending(&self, project_id: &ProjectId) -> Vec<ApprovalAsk> {
        let Some(entries) = self.projects.get(project_id) else { return Vec::new() };
        let mut pending: Vec<ApprovalAsk> =
            entries.values().filter(|entry| entry.decision.is_none()).map(|entry| entry.ask.clone()).collect();
        pending.sort_by(|a, b| a.requested_at.cmp(&b.requested_at));
        pending
    }

    /// Pending questions whose time (`now_ms`) has come.
    pub(crate) fn due(&self, now_ms: u64) -> Vec<(ProjectId, String)> {
        let pending = self.projects.iter().flat_map(|(project_id, entries)| {
            entries.values().filter(|entry| entry.decision.is_none()).map(move |entry| (project_id, entry))
        });
        pending
            .filter(|(_, entry)| entry.ask.expires_at_ms <= now_ms)
            .map(|(project_id, entry)| (project_id.clone(), entry.ask.approval_id.clone()))
            .collect()
    }

    /// Decided and not delivered past their lease: claimed for another lease.
    pub(crate) fn claim_undelivered(&mut self, lease: Duration) -> Vec<Undelivered> {
        let now = now_ms();
        let mut claimed = Vec::new();
        for (project_id, entries) in &mut self.projects {
            for entry in entries.values_mut() {
                let Some(decision) = &entry.decision else { continue };
                if entry.delivered || entry.lease_until_ms > now {
                    continue;
                }
                entry.lease_until_ms = now + lease.as_millis() as u64;
                claimed.push(Undelivered {
                    project_id: project_id.clone(),
                    ask: entry.ask.clone(),
                    decision: decision.clone(),
                });
            }
        }
        claimed
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const LEASE: Duration = Duration::from_secs(60);

    fn ask(expires_in_ms: u64) -> ApprovalAsk {
        ApprovalAsk {
            approval_id: "a".into(),
            agent: "ops".into(),
            data: Value::Null,
            options: vec!["approve".into(), "reject".into()],
            expires_at_ms: now_ms() + expires_in_ms,
            requested_at: "t".into(),
            requested_by: None,
        }
    }

    fn decision(what: &str) -> Decision {
        Decision {
            decision: what.into(),
            user_id: Some("u".into()),
            comment: None,
            decided_at: "t".into(),
            message_id: format!("m-{what}"),
        }
    }

    #[test]
    fn exactly_one_decision_wins_and_a_later_one_is_told_the_winner() {
        let mut table = ApprovalTable::default();
        let project: ProjectId = "p".into();
        table.request(&project, &ask(60_000));
        assert_eq!(table.pending(&project).len(), 1);
        assert!(matches!(table.decide(&project, "a", &decision("maybe"), LEASE), DecideOutcome::NotAnOption(_)));
        assert!(matches!(table.decide(&project, "a", &decision("approve"), LEASE), DecideOutcome::Won(_)));
        assert_eq!(
            table.decide(&project, "a", &decision("reject"), LEASE),
            DecideOutcome::AlreadyDecided(decision("approve"))
        );
        assert!(table.pending(&project).is_empty());
        assert_eq!(table.decide(&project, "b", &decision("approve"), LEASE), DecideOutcome::NotFound);
    }

    #[test]
    fn only_a_due_question_expires_and_an_expired_one_takes_no_decision() {
        let mut table = ApprovalTable::default();
        let project: ProjectId = "p".into();
        table.request(&project, &ask(60_000));
        assert_eq!(table.decide(&project, "a", &decision("expired"), LEASE), DecideOutcome::NotFound, "not yet due");
        let first = table.request(&project, &ask(0)).expect("asked already: nothing changes");
        assert!(first.expires_at_ms > now_ms(), "the question as first asked");
        let due = ApprovalAsk { approval_id: "b".into(), ..ask(0) };
        assert!(table.request(&project, &due).is_none());
        assert_eq!(table.due(now_ms()), vec![(project.clone(), "b".to_owned())]);
        assert_eq!(table.decide(&project, "b", &decision("approve"), LEASE), DecideOutcome::NotFound, "too late");
        assert!(matches!(table.decide(&project, "b", &decision("expired"), LEASE), DecideOutcome::Won(_)));
    }

    #[test]
    fn an_undelivered_decision_is_claimed_once_its_lease_ran_out_and_never_after_delivery() {
        let mut table = ApprovalTable::default();
        let project: ProjectId = "p".into();
        table.request(&project, &ask(60_000));
        table.decide(&project, "a", &decision("approve"), LEASE);
        assert!(table.claim_undelivered(LEASE).is_empty(), "its decider still holds it");
        for entry in table.projects.get_mut(&project).unwrap().values_mut() {
            entry.lease_until_ms = 0;
        }
        assert_eq!(table.claim_undelivered(LEASE).len(), 1);
        assert!(table.claim_undelivered(LEASE).is_empty(), "claimed for another lease");
        for entry in table.projects.get_mut(&project).unwrap().values_mut() {
            entry.lease_until_ms = 0;
        }
        table.delivered(&project, "a");
        assert!(table.claim_undelivered(LEASE).is_empty());
    }
}
