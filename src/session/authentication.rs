//! A session's identity over its life: the authentication timeout of a connection that came
//! without a token, `authenticate` (first token or refresh), and the token's expiry.
//!
//! - Tokens required and none on the upgrade: the connection must `authenticate` within
//!   AUTH_TIMEOUT_SECS or is closed with 3502. (A connection that presented a publish key is a
//!   service's and is not timed out.)
//! - A valid token: `authenticated` with `expires_at` and `refresh_at`; the connection is closed
//!   with 3005 at `exp` plus JWT_LEEWAY_SECS unless it authenticates again first.
//! - A refresh must be for the same `sub` (else `forbidden`, and the identity stays). A
//!   refreshed token that allows fewer projects ends the subscriptions it no longer allows, each
//!   with a `forbidden` error naming the project.
//! - An invalid token in `authenticate`: `unauthorized`, then close 3500.
//! - A first token whose user already holds MAX_CONNECTIONS_PER_USER connections on this task:
//!   `too_many_connections`, then close 3504. A first token with the `publish` scope moves the
//!   connection to a service's request budget.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix::prelude::*;
use bytestring::ByteString;

use super::Session;
use crate::{
    access::{token::Identity, Action},
    hub::Unsubscribe,
    protocol::{CloseCode, ErrorCode, Reply, RequestError, RequestId},
};

/// Frames a connection may send while its first token is verified; more are refused `busy`.
const MAX_HELD_FRAMES: usize = 32;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

impl Session {
    /// Arms the deadline the connection's identity imposes (see the module doc).
    pub(super) fn start_identity_deadline(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.identity_deadline.take() {
            ctx.cancel_future(handle);
        }
        let policy = &self.gateway.policy;
        let handle = match &self.principal.identity {
            Some(identity) => {
                let ends_at = identity.expires_at + self.gateway.session.jwt_leeway.as_secs();
                let remaining = Duration::from_secs(ends_at.saturating_sub(unix_now()));
                ctx.run_later(remaining, |session, _| {
                    log::info!(connection_id = &*session.id; "token expired without a refresh");
                    session.gateway.metrics.token_expiries.inc();
                    session.outbox.close(CloseCode::TokenExpired);
                })
            }
            None if policy.tokens_required() && !self.principal.has_key => {
                ctx.run_later(self.gateway.session.auth_timeout, |session, _| {
                    if session.principal.identity.is_none() {
                        session.gateway.metrics.auth_failures.with_label_values(&["timeout"]).inc();
                        session.outbox.close(CloseCode::AuthenticationTimeout);
                    }
                })
            }
            None => return,
        };
        self.identity_deadline = Some(handle);
    }

    /// `{"action":"authenticate","token":"..."}`: verifies the token (off the actor: a JWKS
    /// fetch may be needed) and answers when it is known.
    pub(super) fn authenticate(
        &mut self,
        token: String,
        request_id: Option<RequestId>,
        ctx: &mut Context<Self>,
    ) -> Result<(), RequestError> {
        if !self.gateway.policy.tokens_required() {
            return Err(RequestError::new(
                ErrorCode::InvalidRequest,
                "This server takes no tokens (no JWT_SECRET or JWT_JWKS_URL): connections are anonymous",
            ));
        }
        self.take_inflight_slot()?;
        if self.principal.identity.is_none() {
            self.held_frames.get_or_insert_with(Vec::new);
        }
        let gateway = self.gateway.clone();
        let verified = async move { gateway.policy.verify_token(&token).await };
        ctx.spawn(verified.into_actor(self).map(move |verified, session, ctx| {
            session.release_inflight_slot();
            let held = session.held_frames.take().unwrap_or_default();
            match verified {
                Some(Ok(identity)) => {
                    session.accept_identity(identity, request_id.as_ref(), ctx);
                    for frame in held {
                        session.handle_text(&frame, ctx);
                    }
                }
                Some(Err(error)) => {
                    session.gateway.metrics.auth_failures.with_label_values(&[error.label()]).inc();
                    log::info!(connection_id = &*session.id, reason = error.label(); "token refused; closing with 3500");
                    let refusal = RequestError::new(ErrorCode::Unauthorized, format!("Invalid token: {error}"));
                    session.reply_error(&refusal, request_id.as_ref());
                    session.outbox.close(CloseCode::InvalidToken);
                }
                None => {}
            }
        }));
        Ok(())
    }

    /// Holds a frame that arrived while the first token is verified; false when none is.
    pub(super) fn hold_while_authenticating(&mut self, frame: &ByteString) -> bool {
        let Some(held) = &mut self.held_frames else { return false };
        if held.len() < MAX_HELD_FRAMES {
            held.push(frame.clone());
        } else {
            let error = RequestError::busy("Wait for the answer to authenticate");
            self.reply_error(&error, None);
        }
        true
    }

    fn accept_identity(&mut self, identity: Arc<Identity>, request_id: Option<&RequestId>, ctx: &mut Context<Self>) {
        let metrics = &self.gateway.metrics;
        let refresh = match &self.principal.identity {
            Some(current) if current.user_id != identity.user_id => {
                metrics.auth_failures.with_label_values(&["other_user"]).inc();
                let error = RequestError::new(
                    ErrorCode::Forbidden,
                    "A refreshed token must be for the same user (sub); this connection keeps its identity",
                );
                self.reply_error(&error, request_id);
                return;
            }
            Some(_) => true,
            None => false,
        };
        if !refresh {
            if let Err(refusal) = self.gateway.policy.admit_user(&mut self.permit, &identity) {
                self.gateway.metrics.limit_refused(refusal.label());
                log::info!(
                    connection_id = &*self.id, user_id = &*identity.user_id;
                    "user at MAX_CONNECTIONS_PER_USER; closing with 3504"
                );
                self.reply_error(&self.gateway.policy.connection_refusal(refusal), request_id);
                self.outbox.close(CloseCode::TooManyConnections);
                return;
            }
        }
        let metrics = &self.gateway.metrics;
        metrics.authentications.with_label_values(&[if refresh { "refresh" } else { "authenticate" }]).inc();
        if !refresh {
            metrics.authenticated_connections.inc();
        }
        self.reply(
            Reply::Authenticated {
                user_id: &identity.user_id,
                expires_at: identity.expires_at,
                refresh_at: identity.refresh_at(),
            },
            request_id,
            "authenticated",
        );
        self.principal.identity = Some(identity);
        if self.gateway.policy.budget_changes(&self.budget, &self.principal) {
            self.budget = self.gateway.policy.request_budget(&self.principal);
        }
        self.start_identity_deadline(ctx);
        if refresh {
            self.end_subscriptions_no_longer_allowed();
        }
    }

    /// After a refresh: every subscription the new token does not allow ends, with an error
    /// naming its project.
    fn end_subscriptions_no_longer_allowed(&mut self) {
        let policy = &self.gateway.policy;
        let refused: Vec<(_, RequestError)> = self
            .subscriptions
            .iter()
            .filter_map(|project_id| {
                let check = policy.check(&self.principal, Action::Subscribe { project_id, held: 0 });
                check.err().map(|error| (project_id.clone(), error))
            })
            .collect();
        for (project_id, error) in refused {
            self.subscriptions.remove(&project_id);
            let ended = RequestError::new(
                error.code,
                format!("Subscription ended: the refreshed token does not allow project {project_id:?}"),
            );
            let frame = Reply::error_about(&ended, None, Some(&project_id)).to_frame(None);
            self.gateway.metrics.error_sent(error.code);
            // The hub queues the error after it removed the subscription, so nothing of the
            // project follows it. do_send: one per subscription held, and it must not be lost.
            self.gateway.hub.do_send(Unsubscribe { id: self.id.clone(), project_id, confirmation: frame });
        }
    }
}
