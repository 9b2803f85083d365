//! The session actor: one per WebSocket connection.
//!
//! It owns the connection's [`Outbox`] (the bounded outbound queue, drained by the upgrade
//! response's body, [`OutboundBody`]; both in [`crate::connection`]), reads the client's messages
//! ([`inbound::InboundFrames`], as a `StreamHandler`), parses each with
//! [`crate::protocol::request::parse`], asks [`crate::access::AccessPolicy`] whether it may, and
//! routes it: subscriptions to the hub, forwards to the queue dispatcher, publishes to the
//! publish path. It keeps the heartbeat and closes a silent peer.
//!
//! It never waits on another actor while handling a frame: requests to the hub are
//! `try_send` (a full hub answers `busy`), and forwards and publishes are answered later, when
//! their result arrives. At most MAX_INFLIGHT_PER_CONNECTION of those may be pending per
//! connection; more are answered `busy` (flood control).
//!
//! Every frame a client sends (text, binary, WebSocket ping) spends one request of the
//! connection's budget ([`crate::access::rate`]) before anything else is done with it: over
//! budget, a text frame is parsed only to answer `rate_limited` with its `request_id` (and a
//! forward's `message_id`) and is not executed, so nothing refused is ever queued; a ping gets
//! no pong. After CLIENT_RATE_CLOSE_AFTER refusals in a row the connection is closed with 3509.
//!
//! A session closes after its in-flight requests on a drain (SIGTERM, 1012) and on 3509: it
//! stops taking requests, waits (bounded) for the forwards and publishes it accepted to be
//! answered, then closes. Where the connection is in its life (open, winding down, closed, and
//! who closed it) is [`crate::connection::state`]'s one state machine; the session asks it rather than keeping
//! flags. The connection's [`ConnectionPermit`] is its place under the connection caps until the
//! actor is dropped.

mod authentication;
pub(crate) mod inbound;
mod presence;
mod streams;

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use bytestring::ByteString;

use self::{
    inbound::{Inbound, InboundError, InboundFrames},
    streams::StreamRequests,
};
use crate::{
    access::{
        connections::ConnectionPermit,
        rate::{RequestBudget, Spend},
        Action, Principal,
    },
    approvals::{Decided, Decider, Requested},
    connection::{
        outbound_body::OutboundBody,
        outbox::{Outbound, Outbox, OutboxLimits},
        state::{CloseCause, ConnectionState, OutboundEnd},
        ConnectionId,
    },
    dispatcher::{message::QueueMessage, routing::AgentRole, Forward},
    gateway::Gateway,
    hub::{Connect, Disconnect, Drain, Subscribe, Unsubscribe},
    persistence::{ConnectionRecord, Record},
    protocol::{
        request::{self, ProjectId},
        CloseCode, ErrorCode, ForwardRequest, PublishRequest, Reply, Request, RequestError, RequestId,
        SubscribeRequest,
    },
    publish::PublishSource,
    streams::{Appended, CancelRequested, Canceller, Ended, Started},
};

/// How long the connection may take to hand over the close frame once a close is asked for. A
/// peer that reads nothing leaves the HTTP layer's write buffer full, and then the body is not
/// polled at all: the session ends anyway, so the hub and the metrics let go of it.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Session {
    id: ConnectionId,
    gateway: Arc<Gateway>,
    outbox: Outbox,
    principal: Principal,
    /// Projects this connection asked for (the hub holds the authoritative map; this copy
    /// enforces the per-connection limit without asking it).
    subscriptions: HashSet<ProjectId>,
    last_heard: Instant,
    /// Forwards and publishes sent on and not yet answered.
    inflight: usize,
    /// Agent-stream requests, applied in order (started with the first).
    stream_requests: Option<StreamRequests>,
    /// Open, winding down or closed (who closed it first is the outbox's close signal).
    state: ConnectionState,
    /// The connection's place under the connection caps, given back when the session drops.
    permit: ConnectionPermit,
    budget: RequestBudget,
    opened_at: String,
    remote_addr: Option<String>,
    /// The timer that ends the connection's identity: the authentication timeout (3502) before
    /// a token, the token's expiry (3005) after. Replaced on each (re)authentication.
    identity_deadline: Option<SpawnHandle>,
    /// While a first `authenticate` is being verified: the frames that came after it, handled
    /// once it is answered, so a client may pipeline `authenticate` and `subscribe`.
    held_frames: Option<Vec<ByteString>>,
}

/// Everything needed to start a session.
pub(crate) struct NewSession {
    pub gateway: Arc<Gateway>,
    pub principal: Principal,
    /// Admitted under the connection caps by the upgrade.
    pub permit: ConnectionPermit,
    pub remote_addr: Option<String>,
    pub initial_projects: Vec<ProjectId>,
    /// Projects named on the URL that the principal may not subscribe to: each gets a
    /// `forbidden` error after the greeting, and nothing of it is delivered.
    pub refused_projects: Vec<(ProjectId, RequestError)>,
}

impl Session {
    /// Starts the actor, registers it with the hub (subscribing any project named on the URL)
    /// and queues the `connected` greeting. Returns, once the hub knows it, the body that
    /// carries the connection's outbound frames.
    pub(crate) async fn start(new: NewSession, payload: actix_web::web::Payload) -> Result<OutboundBody, MailboxError> {
        let settings = new.gateway.session;
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let limits = OutboxLimits {
            max_messages: settings.outbound_queue_messages,
            max_bytes: settings.outbound_queue_bytes,
            write_delay: settings.write_delay,
        };
        let (outbox, body) = Outbox::new(limits, done_tx);
        let id: ConnectionId = uuid::Uuid::new_v4().to_string().into();
        let greeting = Reply::Connected {
            message: "WebSocket connection established",
            timestamp: crate::protocol::now_iso8601(),
            connection_id: &id,
        }
        .to_frame(None);
        // A fresh queue always has room for the first frames.
        let _ = outbox.push_text(greeting);
        for (project_id, error) in &new.refused_projects {
            let refusal = Reply::error_about(error, None, Some(project_id));
            if outbox.push_text(refusal.to_frame(None)).is_ok() {
                new.gateway.metrics.error_sent(error.code);
            }
        }
        let hub = new.gateway.hub.clone();
        let metrics = new.gateway.metrics.clone();
        let initial_projects = new.initial_projects.clone();
        let authenticated = new.principal.identity.is_some();
        let budget = new.gateway.policy.request_budget(&new.principal);
        let session = Session {
            id: id.clone(),
            gateway: new.gateway,
            outbox: outbox.clone(),
            principal: new.principal,
            subscriptions: new.initial_projects.into_iter().collect(),
            last_heard: Instant::now(),
            inflight: 0,
            stream_requests: None,
            state: ConnectionState::Open,
            permit: new.permit,
            budget,
            opened_at: crate::protocol::now_iso8601(),
            remote_addr: new.remote_addr,
            identity_deadline: None,
            held_frames: None,
        };
        let member = session.presence_member();
        let close_asked = outbox.close_asked();
        let inbound = InboundFrames::new(payload, settings.max_frame_bytes);
        let addr = Session::create(move |ctx| {
            ctx.add_stream(inbound);
            let ended = async move {
                tokio::select! {
                    sent = done => match sent {
                        Ok(Some(_)) => OutboundEnd::CloseDone,
                        Ok(None) | Err(_) => OutboundEnd::ConnectionGone,
                    },
                    () = async {
                        close_asked.await;
                        tokio::time::sleep(CLOSE_FLUSH_TIMEOUT).await;
                    } => OutboundEnd::CloseDone,
                }
            };
            ctx.spawn(
                ended.into_actor(&session).map(|outbound, session, ctx| session.outbound_finished(outbound, ctx)),
            );
            session
        });
        metrics.connections_opened.inc();
        metrics.active_connections.inc();
        if authenticated {
            metrics.authenticated_connections.inc();
        }
        metrics.frame_out("connected");
        let channels_ready =
            hub.send(Connect { id, outbox, projects: initial_projects, session: addr.recipient(), member }).await?;
        if let Some(ready) = channels_ready {
            ready.await;
        }
        Ok(body)
    }

    fn reply(&self, reply: Reply<'_>, request_id: Option<&RequestId>, kind: &'static str) {
        if self.outbox.push_text(reply.to_frame(request_id)).is_ok() {
            self.gateway.metrics.frame_out(kind);
        }
    }

    fn reply_error(&self, error: &RequestError, request_id: Option<&RequestId>) {
        self.send_error_frame(Reply::error(error).to_frame(request_id), error.code);
    }

    fn send_error_frame(&self, frame: ByteString, code: ErrorCode) {
        if self.outbox.push_text(frame).is_ok() {
            self.gateway.metrics.error_sent(code);
        }
    }

    fn handle_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let parsed = request::parse(text, self.gateway.session.parse_limits);
        let label = parsed.request.as_ref().map_or("invalid", Request::action);
        self.gateway.metrics.frame_in(label);
        let request_id = parsed.request_id;
        let result = parsed.request.and_then(|request| {
            self.state.admits(&request)?;
            self.route(request, request_id.clone(), ctx)
        });
        if let Err(error) = result {
            self.reply_error(&error, request_id.as_ref());
        }
    }

    /// Sends a well-formed request where it goes, after the access check.
    fn route(
        &mut self,
        request: Request,
        request_id: Option<RequestId>,
        ctx: &mut Context<Self>,
    ) -> Result<(), RequestError> {
        let policy = &self.gateway.policy;
        match request {
            Request::Ping => {
                self.reply(Reply::Pong {}, request_id.as_ref(), "pong");
                Ok(())
            }
            Request::Subscribe(subscribe) => {
                let held =
                    if self.subscriptions.contains(&subscribe.project_id) { 0 } else { self.subscriptions.len() };
                policy.check(&self.principal, Action::Subscribe { project_id: &subscribe.project_id, held })?;
                self.subscribe(subscribe, request_id)
            }
            Request::Authenticate { token } => self.authenticate(token, request_id, ctx),
            Request::Unsubscribe { project_id } => {
                policy.check(&self.principal, Action::Unsubscribe)?;
                self.unsubscribe(project_id, request_id)
            }
            Request::Forward(forward) => {
                policy.check(&self.principal, Action::Forward { project_id: &forward.project_id })?;
                self.forward(forward, request_id, ctx)
            }
            Request::Publish(publish) => {
                policy.check(&self.principal, Action::Publish { project_id: &publish.project_id })?;
                self.publish(publish, request_id, ctx)
            }
            Request::Presence { project_id } => {
                policy.check(&self.principal, Action::ReadPresence { project_id: &project_id })?;
                self.presence(project_id, true, request_id, ctx)
            }
            Request::PresenceStats { project_id } => {
                policy.check(&self.principal, Action::ReadPresence { project_id: &project_id })?;
                self.presence(project_id, false, request_id, ctx)
            }
            Request::StreamStart(start) => {
                policy.check(&self.principal, Action::Publish { project_id: &start.project_id })?;
                let (streams, user_id) = (self.gateway.streams.clone(), self.principal.user_id().map(str::to_owned));
                let started = async move { streams.start(start, PublishSource::WebSocket, user_id.as_deref()).await };
                self.stream_request(started, (Started::reply, "stream_started"), true, request_id)
            }
            Request::StreamAppend(append) => {
                policy.check(&self.principal, Action::Publish { project_id: &append.project_id })?;
                let streams = self.gateway.streams.clone();
                let appended = async move { streams.append(append, PublishSource::WebSocket).await };
                // A success is answered only when asked for (a request_id): an agent streaming
                // tokens does not want a frame back for each.
                let answered = request_id.is_some();
                self.stream_request(appended, (Appended::reply, "stream_appended"), answered, request_id)
            }
            Request::ApprovalRequest(ask) => {
                policy.check(&self.principal, Action::Publish { project_id: &ask.project_id })?;
                let (approvals, user_id) =
                    (self.gateway.approvals.clone(), self.principal.user_id().map(str::to_owned));
                let requested = async move { approvals.request(ask, user_id.as_deref()).await };
                self.stream_request(requested, (Requested::reply, "approval_requested"), true, request_id)
            }
            Request::ApprovalDecide(decision) => {
                policy.check(&self.principal, Action::Decide { project_id: &decision.project_id })?;
                let (approvals, connection_id) = (self.gateway.approvals.clone(), self.id.clone());
                let user_id = self.principal.user_id().map(str::to_owned);
                let decided = async move {
                    let decider = Decider { connection_id: &connection_id, user_id: user_id.as_deref() };
                    approvals.decide(decision, decider).await
                };
                self.stream_request(decided, (Decided::reply, "approval_decided"), true, request_id)
            }
            Request::Cancel(cancel) => {
                policy.check(&self.principal, Action::Forward { project_id: &cancel.project_id })?;
                let (streams, connection_id) = (self.gateway.streams.clone(), self.id.clone());
                let user_id = self.principal.user_id().map(str::to_owned);
                let cancelled = async move {
                    let canceller = Canceller { connection_id: &connection_id, user_id: user_id.as_deref() };
                    streams.cancel(cancel, canceller).await
                };
                self.stream_request(cancelled, (CancelRequested::reply, "cancel_requested"), true, request_id)
            }
            Request::StreamEnd(end) => {
                policy.check(&self.principal, Action::Publish { project_id: &end.project_id })?;
                let (streams, user_id) = (self.gateway.streams.clone(), self.principal.user_id().map(str::to_owned));
                let ended = async move { streams.end(end, PublishSource::WebSocket, user_id.as_deref()).await };
                self.stream_request(ended, (Ended::reply, "stream_ended"), true, request_id)
            }
        }
    }

    /// Queues an agent-stream request behind the connection's others ([`streams`]).
    fn stream_request<T: 'static>(
        &mut self,
        request: impl std::future::Future<Output = Result<T, RequestError>> + 'static,
        answer: (for<'a> fn(&'a T) -> Reply<'a>, &'static str),
        answered: bool,
        request_id: Option<RequestId>,
    ) -> Result<(), RequestError> {
        let (outbox, metrics, capacity) = (&self.outbox, &self.gateway.metrics, self.gateway.session.max_inflight);
        let requests = self
            .stream_requests
            .get_or_insert_with(|| StreamRequests::start(outbox.clone(), metrics.clone(), capacity));
        requests.queue(request, answer, answered, request_id)
    }

    fn subscribe(&mut self, subscribe: SubscribeRequest, request_id: Option<RequestId>) -> Result<(), RequestError> {
        let message = Subscribe {
            id: self.id.clone(),
            project_id: subscribe.project_id.clone(),
            request_id,
            since: subscribe.since,
            with_position: subscribe.with_position,
            join_leave: subscribe.join_leave,
            member: self.presence_member(),
        };
        self.gateway.hub.try_send(message).map_err(|_| RequestError::busy("The server is busy with subscriptions"))?;
        self.subscriptions.insert(subscribe.project_id);
        Ok(())
    }

    fn unsubscribe(&mut self, project_id: ProjectId, request_id: Option<RequestId>) -> Result<(), RequestError> {
        let confirmation = Reply::UnsubscriptionConfirmed { project_id: &project_id }.to_frame(request_id.as_ref());
        self.gateway
            .hub
            .try_send(Unsubscribe { id: self.id.clone(), project_id: project_id.clone(), confirmation })
            .map_err(|_| RequestError::busy("The server is busy with subscriptions"))?;
        self.subscriptions.remove(&project_id);
        Ok(())
    }

    fn take_inflight_slot(&mut self) -> Result<(), RequestError> {
        if self.inflight >= self.gateway.session.max_inflight {
            return Err(RequestError::busy(&format!(
                "This connection already has {} requests in flight",
                self.inflight
            )));
        }
        self.inflight += 1;
        Ok(())
    }

    fn release_inflight_slot(&mut self) {
        self.inflight -= 1;
        if let (Some(code), 0) = (self.state.close_when_idle(), self.inflight) {
            self.outbox.close(code);
        }
    }

    /// Stops taking requests and closes with `code` once the requests in flight are answered
    /// (at most DRAIN_INFLIGHT_GRACE later).
    fn close_after_inflight(&mut self, code: CloseCode, ctx: &mut Context<Self>) {
        if !self.state.wind_down(code) {
            return;
        }
        if self.inflight == 0 {
            self.outbox.close(code);
        } else {
            let outbox = self.outbox.clone();
            ctx.run_later(self.gateway.session.drain_inflight_grace, move |_, _| outbox.close(code));
        }
    }

    /// Spends one request of the connection's budget for a frame (`text` for a text frame):
    /// false when the frame must not be executed. A refused text frame is answered
    /// `rate_limited`; frames after the 3509 decision are dropped unanswered.
    fn within_budget(&mut self, text: Option<&str>, ctx: &mut Context<Self>) -> bool {
        if !self.state.answers_frames() {
            return false;
        }
        match self.budget.spend() {
            Spend::Allowed => true,
            Spend::Refused { retry_after } => {
                self.gateway.metrics.limit_refused("rate");
                if let Some(text) = text {
                    self.refuse_over_budget(text, retry_after);
                }
                false
            }
            Spend::CloseConnection => {
                self.gateway.metrics.limit_refused("rate");
                log::info!(
                    connection_id = &*self.id, user_id = self.principal.user_id();
                    "closing a client that keeps sending over its rate limit (3509)"
                );
                self.close_after_inflight(CloseCode::RateLimitExceeded, ctx);
                false
            }
        }
    }

    /// Answers a frame over budget without executing it, naming its `request_id` and, for a
    /// forward, its `message_id`.
    fn refuse_over_budget(&self, text: &str, retry_after: Duration) {
        let parsed = request::parse(text, self.gateway.session.parse_limits);
        let message_id = match &parsed.request {
            Ok(Request::Forward(forward)) => Some(forward.message_id.as_str()),
            _ => None,
        };
        let error = RequestError::rate_limited(
            format!("Too many requests on this connection; retry in {} ms", retry_after.as_millis().max(1)),
            retry_after,
        );
        let frame = Reply::error_about(&error, message_id, None).to_frame(parsed.request_id.as_ref());
        self.send_error_frame(frame, error.code);
    }

    fn forward(
        &mut self,
        forward: ForwardRequest,
        request_id: Option<RequestId>,
        ctx: &mut Context<Self>,
    ) -> Result<(), RequestError> {
        let role = AgentRole::route(&forward.message_type)?;
        self.take_inflight_slot()?;
        let message_id = forward.message_id.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let message = QueueMessage::new(role, forward, &self.id, self.principal.user_id());
        if self.gateway.dispatcher.try_send(Forward { message, reply }).is_err() {
            self.release_inflight_slot();
            return Err(RequestError::busy("The agent queues are busy"));
        }
        let answered = answer.into_actor(self).map(move |result, session, _| {
            match result {
                Ok(Ok(receipt)) => session.reply(
                    Reply::ForwardConfirmed {
                        message_id: &message_id,
                        sqs_message_id: &receipt.sqs_message_id,
                        queue: receipt.queue.name(),
                    },
                    request_id.as_ref(),
                    "forward_confirmed",
                ),
                Ok(Err(error)) => session.forward_failed(&error, &message_id, request_id.as_ref()),
                Err(_) => {
                    let error =
                        RequestError::new(ErrorCode::ForwardFailed, "The queue dispatcher stopped before answering");
                    session.forward_failed(&error, &message_id, request_id.as_ref());
                }
            }
            // After the answer is queued: releasing the last slot of a draining session closes it.
            session.release_inflight_slot();
        });
        ctx.spawn(answered);
        Ok(())
    }

    fn forward_failed(&self, error: &RequestError, message_id: &str, request_id: Option<&RequestId>) {
        let frame = Reply::error_about(error, Some(message_id), None).to_frame(request_id);
        self.send_error_frame(frame, error.code);
    }

    fn publish(
        &mut self,
        publish: PublishRequest,
        request_id: Option<RequestId>,
        ctx: &mut Context<Self>,
    ) -> Result<(), RequestError> {
        self.take_inflight_slot()?;
        let publisher = self.gateway.publisher.clone();
        let user_id = self.principal.user_id().map(str::to_owned);
        let published = async move { publisher.publish(publish, PublishSource::WebSocket, user_id.as_deref()).await };
        ctx.spawn(published.into_actor(self).map(move |result, session, _| {
            match result {
                Ok(receipt) => session.reply(
                    Reply::PublishConfirmed {
                        project_id: &receipt.project_id,
                        id: &receipt.id,
                        subscribers: receipt.subscribers,
                        position: receipt.position.as_ref(),
                    },
                    request_id.as_ref(),
                    "publish_confirmed",
                ),
                Err(error) => session.reply_error(&error, request_id.as_ref()),
            }
            session.release_inflight_slot();
        }));
        Ok(())
    }

    /// The outbound side finished: the connection has ended, and how follows from who asked for
    /// the close first.
    fn outbound_finished(&mut self, outbound: OutboundEnd, ctx: &mut Context<Self>) {
        if self.state.end(self.outbox.close_cause(), outbound).is_some() {
            ctx.stop();
        }
    }

    fn heartbeat(&mut self, _: &mut Context<Self>) {
        if self.last_heard.elapsed() > self.gateway.session.client_timeout {
            log::info!(connection_id = &*self.id; "closing silent peer");
            self.outbox.close(CloseCode::HeartbeatTimeout);
        } else {
            let _ = self.outbox.push_control(Outbound::Ping);
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.gateway.session.ping_interval, Self::heartbeat);
        self.start_identity_deadline(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let ending = self.state.ending();
        let metrics = &self.gateway.metrics;
        metrics.active_connections.dec();
        if self.principal.identity.is_some() {
            metrics.authenticated_connections.dec();
        }
        metrics.connections_closed(ending.label());
        self.gateway.hub.do_send(Disconnect { id: self.id.clone() });
        self.gateway.records.record(Record::Connection(ConnectionRecord {
            connection_id: self.id.to_string(),
            opened_at: std::mem::take(&mut self.opened_at),
            closed_at: crate::protocol::now_iso8601(),
            close_code: ending.record_code(),
            close_reason: ending.label().to_owned(),
            remote_addr: self.remote_addr.take(),
            projects: self.subscriptions.iter().map(ToString::to_string).collect(),
            user_id: self.principal.user_id().map(str::to_owned),
        }));
        log::debug!(connection_id = &*self.id, ending = ending.label(); "connection closed");
    }
}

impl StreamHandler<Result<Inbound, InboundError>> for Session {
    fn handle(&mut self, item: Result<Inbound, InboundError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(Inbound::Text(text)) => {
                if self.within_budget(Some(&text), ctx) && !self.hold_while_authenticating(&text) {
                    self.handle_text(&text, ctx);
                }
            }
            Ok(Inbound::Binary) => {
                if !self.within_budget(None, ctx) {
                    return;
                }
                self.gateway.metrics.frame_in("binary");
                let error = RequestError::new(
                    ErrorCode::BinaryNotSupported,
                    "Binary frames are not supported; send JSON text frames",
                );
                self.reply_error(&error, None);
            }
            Ok(Inbound::Ping(payload)) => {
                if self.within_budget(None, ctx) {
                    let _ = self.outbox.push_control(Outbound::Pong(payload));
                }
            }
            Ok(Inbound::Pong) => {}
            // A close that answers the server's own is the end of the server's close: the first
            // cause counts.
            Ok(Inbound::Close) => self.outbox.close(CloseCause::Client),
            // The peer vanished without a close frame (reset, network drop), unless the server
            // was closing it: then the reset is its answer to the close.
            Err(InboundError::Lost(_)) => self.outbox.close(CloseCause::Lost),
            Err(error) => {
                let code = match error {
                    InboundError::TooBig { .. } => CloseCode::MessageTooBig,
                    InboundError::InvalidUtf8 => CloseCode::InvalidPayload,
                    _ => CloseCode::ProtocolError,
                };
                log::info!(connection_id = &*self.id, error:% = error, close_code = code.code(); "closing on protocol error");
                self.outbox.close(code);
            }
        }
    }

    /// The client's side ended; the body sends the close frame and then the actor stops.
    fn finished(&mut self, _: &mut Self::Context) {
        self.outbox.close(CloseCause::Client);
    }
}

impl Handler<Drain> for Session {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) {
        self.close_after_inflight(CloseCode::ServiceRestart, ctx);
    }
}
