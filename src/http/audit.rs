//! `GET /api/v1/projects/{project_id}/messages?limit=N&cursor=C`: a project's recent forwarded
//! and published messages, newest first, paginated (`next_cursor`). Same key as publishing.

use actix_web::{web, HttpResponse};

use super::{
    caller::{ProjectRequest, ReadAudit},
    Refusal,
};
use crate::{
    gateway::Gateway,
    persistence::QueryProject,
    protocol::{ErrorCode, RequestError},
};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

#[derive(serde::Deserialize)]
pub(crate) struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(crate) async fn project_messages(
    query: web::Query<PageQuery>,
    gateway: web::Data<Gateway>,
    project: ProjectRequest<ReadAudit>,
) -> Result<HttpResponse, Refusal> {
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let page = gateway
        .persistence
        .send(QueryProject { project_id: project.project_id.to_string(), limit, cursor: query.cursor })
        .await
        .map_err(|error| RequestError::new(ErrorCode::Internal, format!("persistence unavailable: {error}")))?
        .map_err(|reason| RequestError::new(ErrorCode::Internal, format!("audit query failed: {reason}")))?;
    Ok(HttpResponse::Ok().json(page))
}
