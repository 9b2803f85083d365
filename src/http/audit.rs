//! `GET /api/v1/projects/{project_id}/messages?limit=N&cursor=C`: a project's recent forwarded
//! and published messages, newest first, paginated (`next_cursor`). Same key as publishing.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{api_principal, refuse_foreign_host, Refusal};
use crate::{
    access::Action,
    gateway::Gateway,
    persistence::QueryProject,
    protocol::{request::validate_project_id, ErrorCode, RequestError},
};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

#[derive(serde::Deserialize)]
pub(crate) struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(crate) async fn project_messages(
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    gateway: web::Data<Gateway>,
) -> HttpResponse {
    if let Some(refusal) = refuse_foreign_host(&request, &gateway.policy) {
        return refusal;
    }
    let result = async {
        let project_id = validate_project_id(&path, gateway.session.parse_limits)?;
        let principal = api_principal(&request, &gateway).await?;
        gateway
            .policy
            .check(&principal, Action::ReadAudit { project_id: &project_id })
            .map_err(|error| Refusal::access(error, &principal))?;
        let query = query.into_inner();
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        gateway
            .persistence
            .send(QueryProject { project_id: project_id.to_string(), limit, cursor: query.cursor })
            .await
            .map_err(|error| RequestError::new(ErrorCode::Internal, format!("persistence unavailable: {error}")))?
            .map_err(|reason| {
                Refusal::from(RequestError::new(ErrorCode::Internal, format!("audit query failed: {reason}")))
            })
    }
    .await;
    match result {
        Ok(page) => HttpResponse::Ok().json(page),
        Err(refusal) => refusal.response(),
    }
}
