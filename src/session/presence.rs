//! A session's presence requests: `presence` and `presence_stats` (the engine reads every
//! task's members of the project), and who this connection is in presence ([`Member`]).

use std::sync::Arc;

use actix::prelude::*;

use super::Session;
use crate::{
    engine::presence::Member,
    protocol::{request::ProjectId, ErrorCode, RequestError, RequestId},
};

impl Session {
    /// The connection as presence lists it, from its current identity.
    pub(super) fn presence_member(&self) -> Arc<Member> {
        let identity = self.principal.identity.as_ref();
        Arc::new(Member::new(
            self.id.clone(),
            identity.map(|identity| identity.user_id.clone()),
            &self.opened_at,
            identity.and_then(|identity| identity.info.as_deref()),
        ))
    }

    /// Answers `presence` (`list`) or `presence_stats` once the engine read the project.
    pub(super) fn presence(
        &mut self,
        project_id: ProjectId,
        list: bool,
        request_id: Option<RequestId>,
        ctx: &mut Context<Self>,
    ) -> Result<(), RequestError> {
        if !self.gateway.session.presence {
            return Err(RequestError::new(ErrorCode::Unavailable, "Presence is off on this server (PRESENCE=false)"));
        }
        self.take_inflight_slot()?;
        let kind = if list { "presence" } else { "presence_stats" };
        self.gateway.metrics.presence_queries.with_label_values(&[kind, "websocket"]).inc();
        let read = self.gateway.engine.presence(&project_id, list);
        ctx.spawn(read.into_actor(self).map(move |result, session, _| {
            match result {
                Ok(presence) => {
                    let frame = presence.to_json(Some(kind), &project_id, list, request_id.as_ref());
                    if session.outbox.push_text(frame.into()).is_ok() {
                        session.gateway.metrics.frame_out(kind);
                    }
                }
                Err(error) => {
                    let error = RequestError::new(ErrorCode::Unavailable, format!("Presence unavailable: {error}"));
                    session.reply_error(&error, request_id.as_ref());
                }
            }
            session.release_inflight_slot();
        }));
        Ok(())
    }
}
