//! Human approvals over HTTP:
//!
//! - `POST /api/v1/projects/{P}/approvals` `{"agent","data","options","expires_in_secs"}`: an
//!   agent asks (the publish API's credentials and budget); 201 the `approval_requested` answer;
//! - `GET /api/v1/projects/{P}/approvals`: the pending ones (`{"project_id","approvals":[...]}`),
//!   for whoever may read the project's history;
//! - `POST /api/v1/projects/{P}/approvals/{A}/decide` `{"decision","comment"?}`: a person
//!   answers (scope `approve`); 200 the `approval_decided` answer once the agent's queue has it,
//!   409 `already_decided` naming the winner, 404 `not_found`.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};

use super::{
    authorization,
    caller::{DecideFor, ProjectRequest, PublishTo, ReadHistory},
    publish::json_body,
    Refusal,
};
use crate::{
    approvals::{listed, Decider},
    gateway::Gateway,
    protocol::request::{ApprovalDecision, ApprovalRequest},
};

fn json(status: StatusCode, body: bytestring::ByteString) -> HttpResponse {
    HttpResponse::build(status).content_type("application/json").body(body.into_bytes())
}

pub(crate) async fn request(
    request: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    project: ProjectRequest<PublishTo>,
) -> Result<HttpResponse, Refusal> {
    let mut body = json_body(&request, payload, &gateway).await?;
    gateway.policy.check_api_rate(&project.caller.principal, authorization(&request)).inspect_err(|_| {
        gateway.metrics.limit_refused("api_rate");
    })?;
    let ask = ApprovalRequest::from_body(project.project_id.clone(), &mut body)?;
    let requested = gateway.approvals.request(ask, project.caller.principal.user_id()).await?;
    Ok(json(StatusCode::CREATED, requested.reply().to_frame(None)))
}

pub(crate) async fn pending(
    gateway: web::Data<Gateway>,
    project: ProjectRequest<ReadHistory>,
) -> Result<HttpResponse, Refusal> {
    let asks = gateway.approvals.pending(&project.project_id).await?;
    let approvals: Vec<_> = asks.iter().map(|ask| listed(&project.project_id, ask)).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"project_id": &*project.project_id, "approvals": approvals})))
}

pub(crate) async fn decide(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    project: ProjectRequest<DecideFor>,
) -> Result<HttpResponse, Refusal> {
    let body = json_body(&request, payload, &gateway).await?;
    let (_, approval_id) = path.into_inner();
    let decision = ApprovalDecision::from_body(project.project_id.clone(), Some(approval_id), &body)?;
    let decider = Decider { connection_id: "http", user_id: project.caller.principal.user_id() };
    let decided = gateway.approvals.decide(decision, decider).await?;
    Ok(json(StatusCode::OK, decided.reply().to_frame(None)))
}
