//! `GET /api/v1/projects/{project_id}/presence[?stats=true]`: who is subscribed to a project, on
//! every task. Answers `{"project_id","clients":[...],"num_clients","num_users","truncated"}`,
//! the `presence` reply without its `type` (at most `PRESENCE_LIST_LIMIT` clients); with
//! `stats=true` the counts only, as `presence_stats`. Readable by whoever may subscribe to the
//! project (and by a publish key, a service's credential).

use actix_web::{web, HttpResponse};

use super::{
    caller::{ProjectRequest, ReadPresence},
    Refusal,
};
use crate::{
    gateway::Gateway,
    protocol::{ErrorCode, RequestError},
};

#[derive(serde::Deserialize)]
pub(crate) struct PresenceQuery {
    #[serde(default)]
    stats: bool,
}

pub(crate) async fn project_presence(
    query: web::Query<PresenceQuery>,
    gateway: web::Data<Gateway>,
    project: ProjectRequest<ReadPresence>,
) -> Result<HttpResponse, Refusal> {
    if !gateway.session.presence {
        return Err(RequestError::new(ErrorCode::Unavailable, "Presence is off on this server (PRESENCE=false)").into());
    }
    let list = !query.stats;
    let kind = if list { "presence" } else { "presence_stats" };
    gateway.metrics.presence_queries.with_label_values(&[kind, "http"]).inc();
    let presence = gateway
        .engine
        .presence(&project.project_id, list)
        .await
        .map_err(|error| RequestError::new(ErrorCode::Unavailable, format!("Presence unavailable: {error}")))?;
    let body = presence.to_json(None, &project.project_id, list, None);
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}
