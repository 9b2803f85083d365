//! The agent-stream API, with the publish API's credentials and budget:
//!
//! - `POST /api/v1/projects/{P}/streams` `{"agent","event","data","stream_id"?}`: starts a stream
//!   (201, the `stream_started` answer);
//! - `POST .../streams/{S}/append` `{"text","at"?}`: appends (200, `stream_appended`);
//! - `POST .../streams/{S}/end` `{"status","data"?}`: ends it (200, `stream_ended`);
//! - `GET .../streams`: the open streams, whole (`{"project_id","streams":[snapshot, ...]}`), and
//!   `GET .../streams/{S}` one of them (or an ended one the engine still keeps), for whoever may
//!   read the project's history.
//!
//! Refusals are the WebSocket's errors with their HTTP status: 409 `stream_conflict` (with the
//! stream's `length`), 409 `stream_ended`, 404 `stream_not_found` (an invalid or another
//! project's stream id alike), 413 `stream_too_large`, 409 `too_many_streams`, 429
//! `rate_limited`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{
    authorization,
    caller::{ProjectRequest, PublishTo, ReadHistory},
    publish::json_body,
    Refusal,
};
use crate::{
    gateway::Gateway,
    protocol::{
        request::{StreamAppendRequest, StreamEndRequest, StreamStartRequest},
        streams::{is_valid_stream_id, StreamId},
        ErrorCode, RequestError,
    },
    publish::PublishSource,
};

/// The `{stream_id}` segment; an id that cannot exist is not found, like one that does not.
fn stream_id(path: &web::Path<(String, String)>) -> Result<StreamId, Refusal> {
    let (_, stream_id) = path.as_ref();
    if !is_valid_stream_id(stream_id) {
        return Err(RequestError::new(ErrorCode::StreamNotFound, "No such stream in this project").into());
    }
    Ok(StreamId::from(stream_id.as_str()))
}

/// The publish API's budget, spent by every write.
fn spend_budget(request: &HttpRequest, gateway: &Gateway, project: &ProjectRequest<PublishTo>) -> Result<(), Refusal> {
    gateway.policy.check_api_rate(&project.caller.principal, authorization(request)).inspect_err(|_| {
        gateway.metrics.limit_refused("api_rate");
    })?;
    Ok(())
}

fn json(status: actix_web::http::StatusCode, body: bytestring::ByteString) -> HttpResponse {
    HttpResponse::build(status).content_type("application/json").body(body.into_bytes())
}

pub(crate) async fn start(
    request: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    project: ProjectRequest<PublishTo>,
) -> Result<HttpResponse, Refusal> {
    let mut body = json_body(&request, payload, &gateway).await?;
    spend_budget(&request, &gateway, &project)?;
    let start = StreamStartRequest::from_body(project.project_id.clone(), &mut body)?;
    let user_id = project.caller.principal.user_id();
    let started = gateway.streams.start(start, PublishSource::Http, user_id).await?;
    let status =
        if started.existing.is_some() { actix_web::http::StatusCode::OK } else { actix_web::http::StatusCode::CREATED };
    Ok(json(status, started.reply().to_frame(None)))
}

pub(crate) async fn append(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    project: ProjectRequest<PublishTo>,
) -> Result<HttpResponse, Refusal> {
    let stream_id = stream_id(&path)?;
    let mut body = json_body(&request, payload, &gateway).await?;
    spend_budget(&request, &gateway, &project)?;
    let append = StreamAppendRequest::from_body(project.project_id.clone(), Some(stream_id), &mut body)?;
    let appended = gateway.streams.append(append, PublishSource::Http).await?;
    Ok(json(actix_web::http::StatusCode::OK, appended.reply().to_frame(None)))
}

pub(crate) async fn end(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    project: ProjectRequest<PublishTo>,
) -> Result<HttpResponse, Refusal> {
    let stream_id = stream_id(&path)?;
    let mut body = json_body(&request, payload, &gateway).await?;
    spend_budget(&request, &gateway, &project)?;
    let end = StreamEndRequest::from_body(project.project_id.clone(), Some(stream_id), &mut body)?;
    let ended = gateway.streams.end(end, PublishSource::Http, project.caller.principal.user_id()).await?;
    Ok(json(actix_web::http::StatusCode::OK, ended.reply().to_frame(None)))
}

pub(crate) async fn list(
    gateway: web::Data<Gateway>,
    project: ProjectRequest<ReadHistory>,
) -> Result<HttpResponse, Refusal> {
    let snapshots = gateway.streams.open_streams(&project.project_id).await?;
    let frames: Vec<String> =
        snapshots.iter().map(|snapshot| snapshot.frame(&project.project_id).to_string()).collect();
    let project_id = serde_json::to_string(&*project.project_id).unwrap_or_default();
    let body = format!("{{\"project_id\":{project_id},\"streams\":[{}]}}", frames.join(","));
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

pub(crate) async fn one(
    path: web::Path<(String, String)>,
    gateway: web::Data<Gateway>,
    project: ProjectRequest<ReadHistory>,
) -> Result<HttpResponse, Refusal> {
    let stream_id = stream_id(&path)?;
    let snapshot = gateway.streams.snapshot(&project.project_id, &stream_id).await?;
    Ok(json(actix_web::http::StatusCode::OK, snapshot.frame(&project.project_id)))
}
