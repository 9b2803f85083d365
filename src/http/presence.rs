//! `GET /api/v1/projects/{project_id}/presence[?stats=true]`: who is subscribed to a project, on
//! every task. Answers `{"project_id","clients":[...],"num_clients","num_users","truncated"}`,
//! the `presence` reply without its `type` (at most `PRESENCE_LIST_LIMIT` clients); with
//! `stats=true` the counts only, as `presence_stats`. Readable by whoever may subscribe to the
//! project (and by a publish key, a service's credential).

use actix_web::{web, HttpRequest, HttpResponse};

use super::{api_principal, refuse_foreign_host, Refusal};
use crate::{
    access::Action,
    gateway::Gateway,
    protocol::{request::validate_project_id, ErrorCode, RequestError},
};

#[derive(serde::Deserialize)]
pub(crate) struct PresenceQuery {
    #[serde(default)]
    stats: bool,
}

pub(crate) async fn project_presence(
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PresenceQuery>,
    gateway: web::Data<Gateway>,
) -> HttpResponse {
    if let Some(refusal) = refuse_foreign_host(&request, &gateway.policy) {
        return refusal;
    }
    let list = !query.stats;
    let result = async {
        let project_id = validate_project_id(&path, gateway.session.parse_limits)?;
        let principal = api_principal(&request, &gateway).await?;
        gateway
            .policy
            .check(&principal, Action::ReadPresence { project_id: &project_id })
            .map_err(|error| Refusal::access(error, &principal))?;
        if !gateway.session.presence {
            return Err(
                RequestError::new(ErrorCode::Unavailable, "Presence is off on this server (PRESENCE=false)").into()
            );
        }
        let kind = if list { "presence" } else { "presence_stats" };
        gateway.metrics.presence_queries.with_label_values(&[kind, "http"]).inc();
        let presence = gateway
            .engine
            .presence(&project_id, list)
            .await
            .map_err(|error| RequestError::new(ErrorCode::Unavailable, format!("Presence unavailable: {error}")))?;
        Ok::<_, Refusal>(presence.to_json(None, &project_id, list, None))
    }
    .await;
    match result {
        Ok(body) => HttpResponse::Ok().content_type("application/json").body(body),
        Err(refusal) => refusal.response(),
    }
}
