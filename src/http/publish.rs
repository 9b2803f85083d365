//! `POST /api/v1/publish`: push a message to a project's subscribers.
//!
//! Body `{"project_id":"P","data":<any JSON>,"type":"<optional event>"}`; answers
//! `{"id","project_id","subscribers","published_at"}` with `subscribers` the local connections
//! reached. Needs `Authorization: Bearer KEY` (see [`crate::access`]). Each key (or token
//! user) has a budget of API_RATE_PER_SECOND; over it, 429 with `Retry-After`.
//!
//! The body is read with a deadline (HTTP_REQUEST_TIMEOUT_SECS): a client trickling it a byte
//! at a time gets 408 instead of holding a connection and a buffer for ever (actix-web bounds the
//! request head with the same setting; the body it does not bound).

use std::time::Duration;

use actix_web::{
    http::{header, StatusCode},
    web, HttpRequest, HttpResponse, ResponseError,
};
use futures_util::StreamExt;
use serde_json::Value;

use super::{
    authorization,
    caller::{check_host, ApiCaller},
    header_str, Refusal,
};
use crate::{
    access::Action,
    gateway::Gateway,
    protocol::{
        request::{parse_object, validate_project_id},
        ErrorCode, PublishRequest, RequestError,
    },
    publish::PublishSource,
};

pub(crate) async fn publish(request: HttpRequest, payload: web::Payload, gateway: web::Data<Gateway>) -> HttpResponse {
    // The Host refusal is answered before the body is read, and is not counted with the errors
    // a publication can meet.
    if let Err(refusal) = check_host(&request, &gateway.policy) {
        return refusal.error_response();
    }
    match accept(&request, payload, &gateway).await {
        Ok(response) => response,
        Err(refusal) => {
            gateway.metrics.error_sent(refusal.error.code);
            refusal.error_response()
        }
    }
}

/// A request's JSON object body: read within its deadline and MAX_FRAME_BYTES, parsed, and (on
/// an open server) sent as JSON from this machine.
pub(super) async fn json_body(
    request: &HttpRequest,
    payload: web::Payload,
    gateway: &Gateway,
) -> Result<serde_json::Map<String, Value>, Refusal> {
    let body = read_body(payload, gateway.session.max_frame_bytes, gateway.session.http_body_timeout).await?;
    let object = parse_object(&body).map_err(|error| error.to_request_error("Body must be a JSON object"))?;
    // Checked once the body parsed, so a body that is not JSON is told so whatever it claims.
    gateway
        .policy
        .check_open_request(header_str(request, header::HOST), header_str(request, header::CONTENT_TYPE), true)
        .map_err(|refusal| Refusal::new(refusal.to_request_error(), StatusCode::UNSUPPORTED_MEDIA_TYPE))?;
    Ok(object)
}

async fn accept(request: &HttpRequest, payload: web::Payload, gateway: &Gateway) -> Result<HttpResponse, Refusal> {
    let policy = &gateway.policy;
    let mut object = json_body(request, payload, gateway).await?;
    let project_id = match object.get("project_id") {
        Some(Value::String(id)) => validate_project_id(id, gateway.session.parse_limits)?,
        _ => return Err(RequestError::new(ErrorCode::InvalidProjectId, "Missing field: project_id").into()),
    };
    let caller = ApiCaller::identify(request, policy, &gateway.metrics).await?;
    caller.authorize(policy, Action::Publish { project_id: &project_id })?;
    policy.check_api_rate(&caller.principal, authorization(request)).inspect_err(|_| {
        gateway.metrics.limit_refused("api_rate");
    })?;
    let publication = PublishRequest::from_body(project_id, &mut object)?;
    let receipt = gateway.publisher.publish(publication, PublishSource::Http, caller.principal.user_id()).await?;
    Ok(HttpResponse::Ok().json(receipt))
}

/// The whole body, at most `limit` bytes, within `timeout`.
async fn read_body(mut payload: web::Payload, limit: usize, timeout: Duration) -> Result<web::BytesMut, Refusal> {
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|error| {
                let error = RequestError::new(ErrorCode::InvalidRequest, format!("Cannot read the body: {error}"));
                Refusal::new(error, StatusCode::BAD_REQUEST)
            })?;
            if body.len() + chunk.len() > limit {
                let error = RequestError::new(ErrorCode::InvalidRequest, "Body larger than MAX_FRAME_BYTES");
                return Err(Refusal::new(error, StatusCode::PAYLOAD_TOO_LARGE));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, read).await.unwrap_or_else(|_| {
        let message = format!("The body did not arrive within {} s (HTTP_REQUEST_TIMEOUT_SECS)", timeout.as_secs());
        Err(Refusal::new(RequestError::new(ErrorCode::InvalidRequest, message), StatusCode::REQUEST_TIMEOUT))
    })
}
