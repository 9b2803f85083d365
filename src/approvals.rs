//! The approvals path: an agent's question to people ("deploy build 142 to prod?") that exactly
//! one authorised person answers, once, and whose answer reaches the agent even when a task dies.
//! Every request and decision, whatever its source (a WebSocket frame, the HTTP API), goes
//! through [`Approvals`].
//!
//! - **Request** (the right to publish to P): the question is kept pending in the engine
//!   (durable with Redis) and published to P's viewers (`approval_requested`); a viewer who
//!   subscribes while it is pending gets it again after its confirmation (the hub's copy,
//!   [`crate::hub::streams`]).
//! - **Decide** (scope `approve`): the engine records the first decision atomically, across
//!   tasks; later ones get `already_decided` naming the winner. The winner is published
//!   (`approval_resolved`) and sent to the agent's queue as
//!   `{"kind":"approval_decision",...}` (attribute `Kind=approval_decision`) through the queue
//!   dispatcher; the decider is answered once the queue has it, and the engine marks it delivered.
//! - **At least once**: a decision is recorded before it is sent. One no queue confirmed within
//!   its lease (its task was killed, the queue was down past the dispatcher's deadline) is
//!   claimed and re-sent by a live task ([`Approvals::run`], every [`SWEEP`]), with the same
//!   message id and `approval_id` for the agent to drop a repeat; never a second decision.
//! - **Expiry**: a question past its time is decided `expired` the same way (the sweep).
//! - **Audit**: each question asked and each decision that won is recorded like a forward
//!   (DynamoDB or the local store): who asked, who decided what, when.

use std::{sync::Arc, time::Duration};

use actix::Addr;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::{
    dispatcher::{message::QueueMessage, routing::AgentRole, Forward, QueueDispatcher},
    engine::{
        approvals::{AskOutcome, DecideOutcome, Undelivered},
        Engine, EngineError,
    },
    persistence::{records::ApprovalAudit, Record, RecordSink},
    protocol::{
        approvals::{iso8601_of_ms, now_ms, requested_frame, resolved_frame, ApprovalAsk, Decision},
        errors::ApprovalRefusal,
        now_iso8601,
        request::{ApprovalDecision, ApprovalRequest, ProjectId},
        ErrorCode, Reply, RequestError, StreamPosition,
    },
};

/// How often a task expires due questions and re-sends undelivered decisions.
const SWEEP: Duration = Duration::from_secs(1);

/// How much longer than a forward's deadline a decision's delivery is left to the task that
/// sends it before another task may: a live sender has answered by then.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// A pending question, as its asker is told.
#[derive(Debug)]
pub(crate) struct Requested {
    pub project_id: ProjectId,
    pub ask: ApprovalAsk,
    pub expires_at: String,
    pub position: Option<StreamPosition>,
}

impl Requested {
    pub(crate) fn reply(&self) -> Reply<'_> {
        Reply::ApprovalRequested {
            project_id: &self.project_id,
            approval_id: &self.ask.approval_id,
            expires_at: &self.expires_at,
            position: self.position.as_ref(),
        }
    }
}

/// A winning decision, as its decider is told.
#[derive(Debug)]
pub(crate) struct Decided {
    pub project_id: ProjectId,
    pub approval_id: String,
    pub decision: String,
    pub message_id: String,
}

impl Decided {
    pub(crate) fn reply(&self) -> Reply<'_> {
        Reply::ApprovalDecided {
            project_id: &self.project_id,
            approval_id: &self.approval_id,
            decision: &self.decision,
            message_id: &self.message_id,
        }
    }
}

/// Who decides: the connection (or HTTP caller) and its verified user.
pub(crate) struct Decider<'a> {
    pub connection_id: &'a str,
    pub user_id: Option<&'a str>,
}

fn engine_error(error: EngineError) -> RequestError {
    RequestError::new(ErrorCode::Unavailable, format!("{error}: nothing was recorded; retry later"))
}

fn not_found(approval_id: &str) -> RequestError {
    RequestError::new(ErrorCode::NotFound, format!("No pending approval request {approval_id} in this project"))
        .about_approval(ApprovalRefusal { approval_id: approval_id.to_owned(), decision: None, decided_by: None })
}

#[derive(Clone)]
pub(crate) struct Approvals {
    engine: Arc<dyn Engine>,
    dispatcher: Addr<QueueDispatcher>,
    records: RecordSink,
    /// How long a decision's delivery is its sender's: FORWARD_DEADLINE_SECS and a margin.
    lease: Duration,
}

impl Approvals {
    /// `forward_deadline`: FORWARD_DEADLINE_SECS, the longest a send may take.
    pub(crate) fn new(
        engine: Arc<dyn Engine>,
        dispatcher: Addr<QueueDispatcher>,
        records: RecordSink,
        forward_deadline: Duration,
    ) -> Self {
        Approvals { engine, dispatcher, records, lease: forward_deadline + LEASE_MARGIN }
    }

    fn audit(&self, project_id: &str, ask: &ApprovalAsk, decision: Option<&Decision>) {
        self.records.record(Record::Approval(ApprovalAudit {
            project_id: project_id.to_owned(),
            approval_id: ask.approval_id.clone(),
            event: if decision.is_some() { "decided" } else { "requested" },
            agent: ask.agent.clone(),
            decision: decision.map(|decision| decision.decision.clone()),
            comment: decision.and_then(|decision| decision.comment.clone()),
            user_id: match decision {
                Some(decision) => decision.user_id.clone(),
                None => ask.requested_by.clone(),
            },
            at: decision.map_or_else(|| ask.requested_at.clone(), |decision| decision.decided_at.clone()),
        }));
    }

    pub(crate) async fn request(
        &self,
        request: ApprovalRequest,
        user_id: Option<&str>,
    ) -> Result<Requested, RequestError> {
        let ApprovalRequest { project_id, approval_id, agent, data, options, expires_in_secs } = request;
        let expires_at_ms = now_ms() + expires_in_secs * 1000;
        let ask = ApprovalAsk {
            approval_id: approval_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            agent,
            data,
            options,
            expires_at_ms,
            requested_at: now_iso8601(),
            requested_by: user_id.map(str::to_owned),
        };
        let frame = requested_frame(&project_id, &ask);
        match self.engine.approval_request(&project_id, &ask, frame).await.map_err(engine_error)? {
            AskOutcome::Asked(position) => {
                self.audit(&project_id, &ask, None);
                Ok(Requested { project_id, expires_at: iso8601_of_ms(expires_at_ms), ask, position: Some(position) })
            }
            AskOutcome::Existing(asked) => {
                Ok(Requested { project_id, expires_at: iso8601_of_ms(asked.expires_at_ms), ask: asked, position: None })
            }
        }
    }

    pub(crate) async fn decide(
        &self,
        request: ApprovalDecision,
        decider: Decider<'_>,
    ) -> Result<Decided, RequestError> {
        let ApprovalDecision { project_id, approval_id, decision, comment } = request;
        let decision = Decision {
            decision,
            user_id: decider.user_id.map(str::to_owned),
            comment,
            decided_at: now_iso8601(),
            message_id: uuid::Uuid::new_v4().to_string(),
        };
        let frame = resolved_frame(&project_id, &approval_id, &decision);
        let decided = self.engine.approval_decide(&project_id, &approval_id, &decision, frame, self.lease);
        let outcome = decided.await.map_err(engine_error)?;
        let ask = match outcome {
            DecideOutcome::Won(ask) => ask,
            // Expired: to a person, as gone as one never asked.
            DecideOutcome::AlreadyDecided(winner) if winner.decision == "expired" => {
                return Err(not_found(&approval_id))
            }
            DecideOutcome::AlreadyDecided(winner) => {
                return Err(RequestError::new(
                    ErrorCode::AlreadyDecided,
                    format!("Already decided: {}", winner.decision),
                )
                .about_approval(ApprovalRefusal {
                    approval_id,
                    decision: Some(winner.decision),
                    decided_by: winner.user_id,
                }))
            }
            DecideOutcome::NotFound => return Err(not_found(&approval_id)),
            DecideOutcome::NotAnOption(options) => {
                return Err(RequestError::new(
                    ErrorCode::InvalidRequest,
                    format!("\"decision\" must be one of {}", options.join(", ")),
                ))
            }
        };
        self.audit(&project_id, &ask, Some(&decision));
        let message_id = decision.message_id.clone();
        self.deliver(&project_id, &ask, &decision, decider.connection_id).await?;
        Ok(Decided { project_id, approval_id, decision: decision.decision, message_id })
    }

    /// Sends a winning decision to its agent's queue and, once the queue has it, marks it
    /// delivered.
    async fn deliver(
        &self,
        project_id: &ProjectId,
        ask: &ApprovalAsk,
        decision: &Decision,
        connection_id: &str,
    ) -> Result<(), RequestError> {
        let role = AgentRole::route(&ask.agent)?;
        let mut fields = Map::new();
        fields.insert("approval_id".into(), json!(ask.approval_id));
        fields.insert("decision".into(), json!(decision.decision));
        fields.insert("comment".into(), json!(decision.comment));
        fields.insert("user_id".into(), json!(decision.user_id));
        fields.insert("decided_at".into(), json!(decision.decided_at));
        fields.insert("data".into(), ask.data.clone());
        let message = QueueMessage {
            message_id: decision.message_id.clone(),
            ..QueueMessage::control(
                role,
                "approval_decision",
                project_id,
                fields,
                connection_id,
                decision.user_id.as_deref(),
            )
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.dispatcher
            .try_send(Forward { message, reply })
            .map_err(|_| RequestError::busy("The agent queues are busy"))?;
        match answer.await {
            Ok(Ok(_receipt)) => {
                // Delivered: the mark only saves a repeat; a failed one leaves a repeat at worst.
                if let Err(error) = self.engine.approval_delivered(project_id, &ask.approval_id).await {
                    log::warn!(project_id = &**project_id, approval_id = ask.approval_id.as_str(), error:% = error; "approval decision delivered but not marked; it may be sent again");
                }
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(RequestError::new(ErrorCode::ForwardFailed, "The queue dispatcher stopped before answering")),
        }
    }

    /// Every [`SWEEP`] until `stop`: decides due questions `expired`, and re-sends decisions no
    /// queue confirmed within their lease.
    pub(crate) async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(SWEEP) => {}
            }
            // While the back end is down there is nothing to read, and asking would only queue
            // behind its reconnection what publishers are waiting for.
            if self.engine.health().backend_up() == Some(false) {
                continue;
            }
            self.expire_due().await;
            self.redeliver().await;
        }
    }

    async fn expire_due(&self) {
        let Ok(due) = self.engine.due_approvals().await else { return };
        for (project_id, approval_id) in due {
            let expired = Decision {
                decision: "expired".into(),
                user_id: None,
                comment: None,
                decided_at: now_iso8601(),
                message_id: uuid::Uuid::new_v4().to_string(),
            };
            let frame = resolved_frame(&project_id, &approval_id, &expired);
            let decided = self.engine.approval_decide(&project_id, &approval_id, &expired, frame, self.lease);
            if let Ok(DecideOutcome::Won(ask)) = decided.await {
                log::info!(project_id = &*project_id, approval_id = approval_id.as_str(); "approval request expired");
                self.audit(&project_id, &ask, Some(&expired));
                if let Err(error) = self.deliver(&project_id, &ask, &expired, "gateway").await {
                    log::warn!(project_id = &*project_id, approval_id = approval_id.as_str(), error:% = error; "expiry not delivered yet; it will be sent again");
                }
            }
        }
    }

    async fn redeliver(&self) {
        let Ok(claimed) = self.engine.claim_undelivered(self.lease).await else { return };
        for Undelivered { project_id, ask, decision } in claimed {
            log::info!(project_id = &*project_id, approval_id = ask.approval_id.as_str(), decision = decision.decision.as_str(); "re-sending an approval decision no queue confirmed");
            if let Err(error) = self.deliver(&project_id, &ask, &decision, "gateway").await {
                log::warn!(project_id = &*project_id, approval_id = ask.approval_id.as_str(), error:% = error; "approval decision still undelivered; it will be sent again");
            }
        }
    }

    /// The project's pending questions.
    pub(crate) async fn pending(&self, project_id: &ProjectId) -> Result<Vec<ApprovalAsk>, RequestError> {
        self.engine.pending_approvals(project_id).await.map_err(engine_error)
    }
}

/// A pending question as `GET .../approvals` lists it: its `approval_requested` frame's fields.
pub(crate) fn listed(project_id: &str, ask: &ApprovalAsk) -> Value {
    serde_json::from_str(&requested_frame(project_id, ask)).unwrap_or(Value::Null)
}
