//! `POST /api/v1/publish`: push a message to a project's subscribers.
//!
//! Body `{"project_id":"P","data":<any JSON>,"type":"<optional event>"}`; answers
//! `{"id","project_id","subscribers","published_at"}` with `subscribers` the local connections
//! reached. Needs `Authorization: Bearer KEY` (see [`crate::access`]).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::{authorization, error_response};
use crate::{
    access::Action,
    broker::PublishSource,
    gateway::Gateway,
    protocol::{
        request::{event_name, validate_project_id},
        ErrorCode, PublishRequest, RequestError,
    },
};

pub async fn publish(request: HttpRequest, body: web::Bytes, gateway: web::Data<Gateway>) -> HttpResponse {
    match parse_and_publish(&request, &body, &gateway).await {
        Ok(response) => response,
        Err(error) => {
            gateway.metrics.error_sent(error.code);
            error_response(&error)
        }
    }
}

async fn parse_and_publish(
    request: &HttpRequest,
    body: &[u8],
    gateway: &Gateway,
) -> Result<HttpResponse, RequestError> {
    let principal = gateway.policy.principal(authorization(request));
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return Err(RequestError::new(ErrorCode::InvalidJson, "Body must be a JSON object"));
    };
    let project_id = match object.get("project_id") {
        Some(Value::String(id)) => validate_project_id(id, gateway.session.parse_limits)?,
        _ => return Err(RequestError::new(ErrorCode::InvalidProjectId, "Missing field: project_id")),
    };
    gateway.policy.check(&principal, Action::Publish { project_id: &project_id })?;
    let event = event_name(object.get("type").or_else(|| object.get("event")))?;
    let data = object.remove("data").unwrap_or(Value::Null);
    let receipt = gateway.broker.publish(PublishRequest { project_id, event, data }, PublishSource::Http).await?;
    Ok(HttpResponse::Ok().json(receipt))
}
